"""All SQL on the ``credential_grant`` table.

A use is counted by one conditional ``UPDATE``: it succeeds only while the grant is unrevoked, unexpired and under
``max_uses``, so concurrent uses (on any number of instances) can never exceed it, and a revocation committed
before a use is seen by that use.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from db.tables import CredentialGrant

COLUMNS = tuple(column._meta.db_column_name for column in CredentialGrant._meta.columns)
_SELECT = ", ".join(COLUMNS)


async def insert(values: Mapping[str, Any]) -> None:
    await CredentialGrant.raw(
        f"INSERT INTO credential_grant ({_SELECT}) VALUES ({', '.join('{}' for _ in COLUMNS)})",
        *(values[name] for name in COLUMNS),
    )


async def by_lookup(lookup_id: str) -> dict[str, Any] | None:
    rows = await CredentialGrant.raw(f"SELECT {_SELECT} FROM credential_grant WHERE lookup_id = {{}}", lookup_id)
    return rows[0] if rows else None


async def consume(grant_id: uuid.UUID, when: datetime) -> bool:
    """Count one use; False when the grant is revoked, expired or used up (nothing is counted then)."""
    rows = await CredentialGrant.raw(
        "UPDATE credential_grant SET uses = uses + 1 WHERE id = {} AND revoked_at IS NULL AND expires_at > {} "
        "AND (max_uses IS NULL OR uses < max_uses) RETURNING id",
        grant_id,
        when,
    )
    return bool(rows)


async def page(credential_id: uuid.UUID, *, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """A credential's grants, newest first (revoked and expired ones included: they are the record)."""
    rows = await CredentialGrant.raw(
        f"SELECT {_SELECT} FROM credential_grant WHERE credential_id = {{}} "
        "ORDER BY created_at DESC, id DESC OFFSET {} LIMIT {}",
        credential_id,
        skip,
        limit,
    )
    counted = await CredentialGrant.raw(
        "SELECT count(*) AS n FROM credential_grant WHERE credential_id = {}", credential_id
    )
    return list(rows), int(counted[0]["n"])


async def revoke(credential_id: uuid.UUID, grant_id: uuid.UUID, when: datetime) -> dict[str, Any] | None:
    """Revoke a grant of this credential (idempotent: an already revoked one keeps its time); the row, or None."""
    rows = await CredentialGrant.raw(
        f"UPDATE credential_grant SET revoked_at = coalesce(revoked_at, {{}}) "
        f"WHERE id = {{}} AND credential_id = {{}} RETURNING {_SELECT}",
        when,
        grant_id,
        credential_id,
    )
    return rows[0] if rows else None
