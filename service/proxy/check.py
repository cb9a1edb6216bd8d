"""Provider checks: one call through the proxy (the credential's ``check`` settings) that says whether the credential
still works. A 401 or 403 sets the credential's status to ``error`` with the reason, as a refused refresh does."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec

from db import credentials as rows
from db import database
from service.auth.principal import Permission, Principal
from service.context import RequestContext
from service.credentials import model
from service.credentials.model import Credential, Status
from service.errors import BadGateway, Conflict, GatewayTimeout, ServiceError
from service.grants.schemas import CheckResult
from service.proxy import config
from service.proxy.service import Call, ProxyService

log = logging.getLogger("service.proxy.check")
ACTOR = "check-due"
_DRAIN_LIMIT = 64 * 1024


class CheckService:
    def __init__(self, proxy: ProxyService) -> None:
        self.proxy = proxy

    async def check(self, ctx: RequestContext, credential_id: str) -> CheckResult:
        credential = await self.proxy.credentials.get(ctx, credential_id)
        view = config.require(credential.proxy)
        if view.check is None:
            raise Conflict("The credential has no check settings; set proxy.check (method, path, expected_status)")
        status: int | None = None
        try:
            proxied = await self.proxy.forward(
                ctx, credential_id, Call(view.check.method, view.check.path, "", [], b"")
            )
            status = proxied.status
            try:
                async for _ in proxied.body:
                    if proxied.usage.response_bytes[0] > _DRAIN_LIMIT:
                        break
            except ServiceError:
                pass
            await proxied.usage.save()
        except (BadGateway, GatewayTimeout):
            pass
        if status is None:
            outcome = "failed"
        elif status == view.check.expected_status:
            outcome = "ok"
        elif status in {401, 403}:
            outcome = "rejected"
        else:
            outcome = "unexpected_status"
        when = model.now()
        async with database.transaction():
            locked = await self.proxy.credentials.locked(ctx, credential.id)
            if locked.proxy is None:
                raise Conflict(config.NOT_PROXYABLE)
            after = msgspec.structs.replace(
                config.decode(locked.proxy), last_checked_at=when, last_check_outcome=outcome, last_check_status=status
            )
            changes: dict[str, object] = {"proxy": msgspec.json.encode(after).decode()}
            if outcome == "rejected" and locked.status is Status.active:
                changes.update(
                    locked.error_columns(f"provider check: the upstream answered HTTP {status}", ctx.actor_id)
                )
            await rows.update(locked.id, changes)
        final: Credential = msgspec.structs.replace(locked, **changes)
        if outcome == "rejected":
            log.warning("credential %s: provider check rejected (HTTP %s); status error", credential.id, status)
        return CheckResult(
            credential_id=str(credential.id),
            checked_at=when,
            outcome=outcome,
            upstream_status=status,
            credential_status=final.status_at(),
        )


@dataclass
class CheckReport:
    due: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counted = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items())) or "none run"
        return f"{self.due} due: {counted}; {len(self.failed)} could not run"


async def check_due(checks: CheckService, interval: timedelta, limit: int = 1000) -> CheckReport:
    """Check every active credential with check settings whose last check is older than ``interval``. Each check is
    claimed first (``db.credentials.claim_check``), so instances running this at the same time never run one check
    twice; a check another instance claimed is not counted here."""
    checked_before = model.now() - interval
    due = await rows.check_due(checked_before, limit)
    report = CheckReport()
    run_id = f"check-due-{uuid.uuid4().hex[:12]}"
    for row in due:
        if not await rows.claim_check(row["id"], checked_before, model.now()):
            continue
        report.due += 1
        # Sees every scope of its workspace (admin), as an operator's job must; it has no permission otherwise.
        principal = Principal(
            workspace_id=row["workspace_id"], actor_id=ACTOR, permissions=frozenset({Permission.admin}), kind="system"
        )
        ctx = RequestContext(request_id=run_id, principal=principal)
        try:
            result = await checks.check(ctx, str(row["id"]))
        except Exception as exc:
            report.failed.append(f"{row['id']}: {type(exc).__name__}")
            continue
        report.outcomes[result.outcome] = report.outcomes.get(result.outcome, 0) + 1
    return report
