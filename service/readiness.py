"""``/health/ready``: ready only when a request could succeed, with the reason named when it could not.

- database: Postgres answers, and every migration this code ships is applied (else: run ``credctl migrate``);
- vault: Vault answers (unsealed, active), the token may use every path the service calls, and the transit key
  encrypts (``vault.readiness``).

A check that finds a configuration problem logs it once per distinct reason, so the log says why the probe fails.
"""

from __future__ import annotations

import logging

from db import database
from db.schema import pending_migrations
from vault import readiness as vault_readiness
from vault.errors import VaultUnavailable
from vault.store import CallContext, SecretStore

log = logging.getLogger("service.readiness")
OK, UNAVAILABLE = "ok", "unavailable"
_reported: set[str] = set()


async def database_check() -> str:
    try:
        await database.ping()
        pending = await pending_migrations()
    except Exception:  # any failure to answer is "unavailable"; the request log has the request
        return UNAVAILABLE
    if pending:
        return _report(
            f"schema not migrated ({len(pending)} migration(s) pending, e.g. {pending[0]}): run `credctl migrate`"
        )
    return OK


async def vault_check(store: SecretStore, ctx: CallContext) -> str:
    if not await store.ping(ctx):
        return UNAVAILABLE
    try:
        found = await vault_readiness.problems(store, ctx)
    except VaultUnavailable:
        return UNAVAILABLE
    return _report("; ".join(found)) if found else OK


def _report(reason: str) -> str:
    if reason not in _reported:
        _reported.add(reason)
        log.error("not ready: %s", reason)
    return reason
