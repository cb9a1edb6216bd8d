"""All SQL on the ``credential_version`` table: who wrote each KV version of a credential's secret, and why."""

from __future__ import annotations

import uuid
from typing import Any

from db.tables import CredentialVersion


async def record(
    credential_id: uuid.UUID, version: int, actor: str, reason: str, restored_from: int | None = None
) -> None:
    await CredentialVersion.raw(
        "INSERT INTO credential_version (id, credential_id, version, created_at, created_by, reason, restored_from) "
        "VALUES (gen_random_uuid(), {}, {}, now(), {}, {}, {})",
        credential_id,
        version,
        actor,
        reason,
        restored_from,
    )


async def of(credential_id: uuid.UUID, *, skip: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """A page of a credential's version records, newest first (every one when ``limit`` is None)."""
    return list(
        await CredentialVersion.raw(
            "SELECT version, created_at, created_by, reason, restored_from FROM credential_version "
            "WHERE credential_id = {} ORDER BY version DESC OFFSET {} LIMIT {}",
            credential_id,
            skip,
            limit,
        )
    )


async def count(credential_id: uuid.UUID) -> int:
    found = await CredentialVersion.raw(
        "SELECT count(*) AS n FROM credential_version WHERE credential_id = {}", credential_id
    )
    return int(found[0]["n"])
