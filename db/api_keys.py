"""All SQL on the ``api_key`` table."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from db.tables import ApiKey

COLUMNS = tuple(column._meta.db_column_name for column in ApiKey._meta.columns)
_SELECT = ", ".join(COLUMNS)
REVOKED = "revoked"
"""The status of a revoked key: its row stays, so ``created_by`` of its credentials still names it."""


async def by_lookup(lookup_id: str) -> dict[str, Any] | None:
    """The key whose public part is ``lookup_id`` (any status)."""
    rows = await ApiKey.raw(f"SELECT {_SELECT} FROM api_key WHERE lookup_id = {{}}", lookup_id)
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
