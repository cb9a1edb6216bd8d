"""The proactive OAuth refresh: tokens expiring within a window are refreshed before anyone needs them."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from db import credentials as rows
from service.context import RequestContext
from service.credentials import model, secrets
from service.credentials.model import Credential, Status
from service.credentials.refresh import RefreshRefused
from service.credentials.service import CredentialService
from service.errors import BackendUnavailable, BadGateway, Conflict, NotFound
from vault.errors import VaultError

ACTOR = "refresh-due"
BATCH = 1000
CONCURRENCY = 4
"""Refreshes in flight at once: each holds a database connection while it waits for the token endpoint."""


@dataclass
class RefreshReport:
    """The outcome of one proactive refresh pass."""

    due: int = 0
    failed: list[str] = field(default_factory=list)
    """One line per failure: the credential and why (no secret)."""
    refreshed: int = 0
    skipped: int = 0

    def summary(self) -> str:
        skipped = f"{self.skipped} skipped (already fresh, disabled or gone)"
        return f"{self.due} due: {self.refreshed} refreshed, {skipped}, {len(self.failed)} failed"


async def refresh_due(service: CredentialService, window: timedelta, spread: float = 0.0) -> RefreshReport:
    """Refresh every active refreshable credential whose token expires within ``window``. Each starts after a
    random delay of up to ``spread`` seconds (never past its skew), so many tokens issued together are not all
    refreshed in the same second."""
    skew = service.refresher.skew
    due = [
        Credential.from_row(row)
        for row in await rows.refresh_due(secrets.REFRESHABLE, Status.active, model.now() + window, BATCH)
    ]
    report = RefreshReport(due=len(due))
    run_id = f"refresh-due-{uuid.uuid4().hex[:12]}"
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(credential: Credential) -> None:
        assert credential.expires_at is not None  # refresh_due selects on it
        headroom = (credential.expires_at - skew - model.now()).total_seconds()
        await asyncio.sleep(random.uniform(0, max(0.0, min(spread, headroom))))  # noqa: S311 (jitter)
        ctx = RequestContext.job(run_id, ACTOR, credential.workspace_id)
        async with slots:
            try:
                after = await service.refresher.refresh_once(ctx, credential, force=False, margin=window)
            except RefreshRefused as exc:
                report.failed.append(f"{credential.id}: {exc.detail}")
            except (Conflict, NotFound):
                report.skipped += 1  # disabled or deleted meanwhile
            except (BadGateway, BackendUnavailable, VaultError) as exc:
                report.failed.append(f"{credential.id}: {type(exc).__name__}: {exc}")
            except Exception as exc:
                report.failed.append(f"{credential.id}: {type(exc).__name__}")
            else:
                if after.kv_version != credential.kv_version:
                    report.refreshed += 1
                else:
                    report.skipped += 1

    await asyncio.gather(*(one(credential) for credential in due))
    return report
