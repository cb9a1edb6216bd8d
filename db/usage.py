"""All SQL on the ``credential_usage`` table: one row per proxied call (never a header value or a body)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from db.tables import CredentialUsage

COLUMNS = tuple(column._meta.db_column_name for column in CredentialUsage._meta.columns)
_SELECT = ", ".join(COLUMNS)
_INSERTED = tuple(name for name in COLUMNS if name not in {"id", "created_at"})


_TYPES = {
    "credential_id": "uuid",
    "grant_id": "uuid",
    "upstream_status": "integer",
    "request_bytes": "bigint",
    "response_bytes": "bigint",
    "duration_ms": "integer",
    "created_at": "timestamptz",
}
_WRITTEN = (*_INSERTED, "created_at")
_RECORD_MANY = (
    "WITH used AS (UPDATE credential SET last_used_at = now() WHERE id = ANY({}::uuid[])) "
    f"INSERT INTO credential_usage ({', '.join(_WRITTEN)}) SELECT * FROM unnest("
    + ", ".join(f"{{}}::{_TYPES.get(name, 'text')}[]" for name in _WRITTEN)
    + ")"
)


async def record_many(batch: Sequence[Mapping[str, Any]]) -> None:
    """Record several calls and set their credentials' ``last_used_at``, in one statement whose text is the same for
    any number of records (one array per column), so it is prepared once. ``created_at`` comes with each record (the
    time of the call, not of the write), so the listing keeps the calls' order."""
    await CredentialUsage.raw(
        _RECORD_MANY,
        list({values["credential_id"] for values in batch}),
        *([values[name] for values in batch] for name in _WRITTEN),
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
