"""All SQL on the ``credential_usage`` table: one row per proxied call (never a header value or a body)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from db.tables import CredentialUsage

COLUMNS = tuple(column._meta.db_column_name for column in CredentialUsage._meta.columns)
_SELECT = ", ".join(COLUMNS)
_INSERTED = tuple(name for name in COLUMNS if name not in {"id", "created_at"})


async def record_many(batch: Sequence[Mapping[str, Any]]) -> None:
    """Record several calls and set their credentials' ``last_used_at``, in one statement. ``created_at`` comes with
    each record (the time of the call, not of the write), so the listing keeps the calls' order."""
    columns = (*_INSERTED, "created_at")
    row = "(" + ", ".join("{}" for _ in columns) + ")"
    await CredentialUsage.raw(
        "WITH used AS (UPDATE credential SET last_used_at = now() WHERE id = ANY({})) "
        f"INSERT INTO credential_usage ({', '.join(columns)}) VALUES {', '.join(row for _ in batch)}",
        list({values["credential_id"] for values in batch}),
        *(values[name] for values in batch for name in columns),
    )


async def page(credential_id: uuid.UUID, *, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """A credential's calls, newest first, and how many there are."""
    rows = await CredentialUsage.raw(
        f"SELECT {_SELECT} FROM credential_usage WHERE credential_id = {{}} "
        "ORDER BY created_at DESC, id DESC OFFSET {} LIMIT {}",
        credential_id,
        skip,
        limit,
    )
    counted = await CredentialUsage.raw(
        "SELECT count(*) AS n FROM credential_usage WHERE credential_id = {}", credential_id
    )
    return list(rows), int(counted[0]["n"])
