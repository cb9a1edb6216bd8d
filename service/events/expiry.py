"""Expiry warnings: ``credential.expiring`` at each configured lead time, and ``credential.expired``, each once per
credential, lead time and expiry, whichever instance (or restart) sees it first (``db/expiry.py``).

OAuth credentials that refresh are left out: their ``expires_at`` is the access token's, renewed by the service;
``credential.refresh_failed`` is their warning."""

from __future__ import annotations

import types
import uuid

from db import database
from db import expiry as notices
from service.credentials.secrets import REFRESHABLE
from service.events import outbox as events
from service.events.types import EventType

ACTOR = "expiry"
BATCH = 500


async def warn(leads: list[int]) -> int:
    """One pass: every warning due now, for each lead time (seconds) and for expiry itself; returns how many."""
    run = f"expiry-{uuid.uuid4().hex}"
    sent = 0
    for lead in [*leads, 0]:
        while True:
            async with database.transaction():
                due = await notices.claim_due(lead, BATCH, sorted(t.value for t in REFRESHABLE))
                for row in due:
                    credential = types.SimpleNamespace(
                        id=row["id"],
                        label=row["label"],
                        auth_type=row["auth_type"],
                        provider=row["provider"],
                        status=row["status"],
                    )
                    await events.credential_event(
                        EventType.credential_expired if lead == 0 else EventType.credential_expiring,
                        events.Origin(workspace_id=row["workspace_id"], actor=ACTOR, request_id=run),
                        credential,
                        expires_at=row["expires_at"],
                        lead_seconds=lead or None,
                    )
            sent += len(due)
            if len(due) < BATCH:
                break
    return sent
