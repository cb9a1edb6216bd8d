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


async def of(credential_id: uuid.UUID) -> list[dict[str, Any]]:
    """A credential's version records, newest first."""
    return list(
        await CredentialVersion.raw(
            "SELECT version, created_at, created_by, reason, restored_from FROM credential_version "
            "WHERE credential_id = {} ORDER BY version DESC",
            credential_id,
        )
    )
