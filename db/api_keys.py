"""All SQL on the ``api_key`` table."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from db.database import fetch
from db.tables import ApiKey

COLUMNS = tuple(column._meta.db_column_name for column in ApiKey._meta.columns)
_SELECT = ", ".join(COLUMNS)
CHANNEL = "api_key_changed"
"""Notified with a key's lookup id on every update or delete of the key (a trigger, migration 2026-12-01T11:00),
so every instance drops it from its cache."""
REVOKED = "revoked"
"""The status of a revoked key: its row stays, so ``created_by`` of its credentials still names it."""


async def by_lookup(lookup_id: str) -> dict[str, Any] | None:
    """The key whose public part is ``lookup_id`` (any status)."""
    rows = await fetch(f"SELECT {_SELECT} FROM api_key WHERE lookup_id = {{}}", lookup_id)
    return rows[0] if rows else None


async def insert(values: Mapping[str, Any]) -> None:
    """Insert a key; ``values`` holds every column."""
    await ApiKey.raw(
        f"INSERT INTO api_key ({_SELECT}) VALUES ({', '.join('{}' for _ in COLUMNS)})",
        *(values[name] for name in COLUMNS),
    )


async def page(workspace_id: str, *, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """A workspace's keys that are not revoked, newest first, and how many there are."""
    rows = await ApiKey.raw(
        f"SELECT {_SELECT} FROM api_key WHERE workspace_id = {{}} AND status <> {{}} "
        "ORDER BY created_at DESC, id DESC OFFSET {} LIMIT {}",
        workspace_id,
        REVOKED,
        skip,
        limit,
    )
    counted = await ApiKey.raw(
        "SELECT count(*) AS n FROM api_key WHERE workspace_id = {} AND status <> {}", workspace_id, REVOKED
    )
    return list(rows), int(counted[0]["n"])


async def revoke(key_id: uuid.UUID, workspace_id: str | None, when: datetime) -> dict[str, Any] | None:
    """Revoke a key that is not revoked yet (in ``workspace_id`` when given); the row after, or None."""
    in_workspace = " AND workspace_id = {}" if workspace_id is not None else ""
    rows = await ApiKey.raw(
        f"UPDATE api_key SET status = {{}}, revoked_at = {{}}, updated_at = {{}} "
        f"WHERE id = {{}} AND status <> {{}}{in_workspace} RETURNING {_SELECT}",
        REVOKED,
        when,
        when,
        key_id,
        REVOKED,
        *([workspace_id] if workspace_id is not None else []),
    )
    return rows[0] if rows else None


@contextlib.asynccontextmanager
async def changes(
    database_url: str, changed: Callable[[str], None], lost: Callable[[], None]
) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own listening on ``CHANNEL``: ``changed(lookup_id)`` per notification, ``lost()`` when
    the connection drops."""
    connection = await asyncpg.connect(database_url, timeout=10)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        changed(payload)

    try:
        connection.add_termination_listener(lambda _conn: lost())
        await connection.add_listener(CHANNEL, on_notify)
        yield connection
    finally:
        if not connection.is_closed():
            await connection.close(timeout=5)
