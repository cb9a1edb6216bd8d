"""Destroy the secrets of deletions past the retention window (hourly in the service, or ``credctl purge``)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from db import credentials as rows
from db import idempotency as idempotency_keys
from db.credentials import State
from service.credentials import model
from service.credentials.service import CredentialService
from vault.store import CallContext

log = logging.getLogger("service.maintenance.purge")
ACTOR = "purge"


async def purge(service: CredentialService, now: datetime | None = None) -> int:
    """Destroy every secret deleted longer ago than the retention window (as of ``now``); returns how many were
    purged."""
    when = now or model.now()
    await idempotency_keys.purge(when - service.idempotency.ttl)
    due = await rows.claim_purge(when - service.lifecycle.delete_retention)
    run = f"purge-{uuid.uuid4().hex}"
    purged = 0
    for row in due:
        # Audited as the purge, in the credential's workspace.
        call = CallContext(request_id=run, actor=ACTOR, workspace=row["workspace_id"])
        try:
            await service.destroy(call, row["id"], put_back=State.deleted)
        except Exception as exc:
            log.warning("purge of %s failed (%s); retried at the next purge", row["id"], type(exc).__name__)
        else:
            purged += 1
    return purged
