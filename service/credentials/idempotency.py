"""``Idempotency-Key`` on create, refresh, restore and version restore: a retried request gets the first response.

The first request with a key claims it (a row in ``idempotency_key``, per workspace and principal), runs, and stores
its response; a repeat with the same request within the TTL gets that response again (status, body, ETag) without
running; a repeat with another request (method, path or body) answers 422. A duplicate that arrives while the first
is still running, on this instance or another, waits for its response (up to ``wait``), then answers 409.

Only successes are kept: an error leaves no effect to protect, so the claim is released and a retry runs again. A
claim whose owner died without answering is taken over after ``lease``. The stored response is credential metadata
(``CredentialRead``), never a secret; the request is kept only as a Vault transit HMAC (``SecretStore.fingerprint``),
since a create's body holds the secret and a plain hash of a short one could be guessed offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import msgspec
from litestar import Response

from db import idempotency as keys
from service.context import RequestContext
from service.credentials.model import Credential, now
from service.credentials.schemas import CredentialRead
from service.errors import Conflict, RequestInvalid
from service.faults import is_crash
from vault.secret import Secret
from vault.store import SecretStore

log = logging.getLogger("service.credentials.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
"""Printable ASCII without spaces, as Stripe's and the IETF draft's keys (a UUID fits)."""


class Idempotency:
    """Runs operations at most once per (workspace, principal, key) within ``ttl``."""

    def __init__(
        self,
        store: SecretStore,
        ttl: timedelta = timedelta(hours=24),
        wait: timedelta = timedelta(seconds=10),
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.wait = wait
        self.lease = lease

    async def run(
        self,
        ctx: RequestContext,
        key: str | None,
        request: tuple[str, str, bytes],
        operation: Callable[[], Awaitable[Credential]],
    ) -> Response[CredentialRead]:
        """``operation``'s credential with its ETag, or the response stored for ``key``. ``request`` is the method,
        path and body that the key is bound to."""
        if key is None:
            return _answer(await operation())
        method, path, body = request
        material = Secret(b"\n".join((method.upper().encode(), path.encode(), body)))
        fingerprint = await self.store.fingerprint(ctx.vault(), material)
        who = (ctx.workspace_id, ctx.actor_id, key)
        deadline = time.monotonic() + self.wait.total_seconds()
        while True:
            at = now()
            if await keys.claim(*who, fingerprint, at, at - self.ttl, at - self.lease):
                break
            found = await keys.find(*who)
            if found is None:
                continue  # released (the first request failed) between our claim and our read: claim again
            if not await self._same(ctx, found["fingerprint"], fingerprint, material):
                raise RequestInvalid.at(
                    ["header", "idempotency_key"],
                    "This Idempotency-Key was used with another request (method, path or body); use a new key",
                    "idempotency_key_reused",
                )
            if found["status_code"] is not None:
                read = msgspec.json.decode(found["response"], type=CredentialRead)
                return Response(read, headers={"ETag": found["etag"], REPLAYED: "true"})
            if time.monotonic() > deadline:
                raise Conflict("A request with this Idempotency-Key is still in progress; retry later")
            await asyncio.sleep(0.05)
        try:
            credential = await operation()
        except BaseException as exc:
            if not is_crash(exc):
                await self._release(who)
            raise
        read = credential.read()
        await keys.complete(*who, 200, msgspec.json.encode(read).decode(), credential.etag)
        return Response(read, headers={"ETag": credential.etag})

    async def _same(self, ctx: RequestContext, stored: str, fingerprint: str, material: Secret) -> bool:
        """Whether a stored fingerprint is this request's; after a key rotation, recomputed with the stored one's
        key version."""
        if stored == fingerprint:
            return True
        stored_version, current_version = stored.split(":")[1], fingerprint.split(":")[1]
        if stored_version == current_version:
            return False
        again = await self.store.fingerprint(ctx.vault(), material, key_version=int(stored_version.removeprefix("v")))
        return again == stored

    @staticmethod
    async def _release(who: tuple[str, str, str]) -> None:
        try:
            await keys.release(*who)
        except Exception as exc:
            # The claim then expires after the lease; until then duplicates wait and answer 409.
            log.warning("idempotency key not released (%s)", type(exc).__name__)  # safe: the class name only


def _answer(credential: Credential) -> Response[CredentialRead]:
    return Response(credential.read(), headers={"ETag": credential.etag})
