"""Bind Piccolo to a database at run time, and apply the migrations."""

from __future__ import annotations

import os

from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.postgres import PostgresEngine

import db.piccolo_conf
from db.tables import ApiKey, Credential

TABLES = (Credential, ApiKey, Migration)


def bind(database_url: str) -> PostgresEngine:
    """Make every table (and Piccolo's migration runner) use ``database_url``. Returns the engine.

    Piccolo finds its engine through the module named by ``PICCOLO_CONF``; pointing that at ``db.piccolo_conf``
    and swapping its ``DB`` is the one way to reach the migration runner too.
    """
    os.environ["PICCOLO_CONF"] = "db.piccolo_conf"
    engine = PostgresEngine(config={"dsn": database_url}, log_queries=False)
    db.piccolo_conf.DB = engine
    for table in TABLES:
        table._meta.db = engine
    return engine


async def migrate(database_url: str) -> None:
    """Apply every migration not yet applied to ``database_url``."""
    bind(database_url)
    result = await run_forwards(app_name="db")
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}")
