"""Whether the database's schema is the one this code expects: every migration in ``db/migrations`` applied."""

from __future__ import annotations

import functools
import importlib
import pkgutil

import asyncpg
from piccolo.apps.migrations.tables import Migration

from db import migrations

APP = "db"


@functools.cache
def known_migrations() -> frozenset[str]:
    """The ID of every migration this code ships."""
    found = set()
    for module in pkgutil.iter_modules(migrations.__path__):
        found.add(str(importlib.import_module(f"{migrations.__name__}.{module.name}").ID))
    return frozenset(found)


async def pending_migrations() -> list[str]:
    """IDs of the migrations not applied to the bound database, oldest first (all of them on an empty one)."""
    try:
        rows = await Migration.select(Migration.name).where(Migration.app_name == APP)
    except asyncpg.UndefinedTableError:
        rows = []
    applied = {row["name"] for row in rows}
    return sorted(known_migrations() - applied)
