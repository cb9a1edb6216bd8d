"""OAuth token refresh of one credential, without races: on reveal, on ``POST .../refresh``, and in the background.

A refresh takes the credential's row lock, calls the token endpoint while holding it, and writes the new tokens
(a new KV version, check-and-set) and the row before releasing it: at most one refresh per credential is in
flight across all instances, and one that acquires the lock after another refreshed sees the new version and does
not refresh again. Inside one process, callers of the same credential share one attempt (``SingleFlight``) rather
than queue on that lock one by one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from db import credentials as rows
from db import database, outbox
from service.context import RequestContext
from service.credentials import secrets
from service.credentials.model import Credential, now
from service.credentials.schemas import AuthType
from service.errors import BadGateway, Conflict
from service.events import outbox as events
from service.events.types import EventType
from service.oauth.client import RefreshFailed, RefreshGrant, RefreshRejected, TokenClient
from service.oauth.single_flight import SingleFlight
from vault.errors import VaultUnavailable
from vault.secret import Secret

if TYPE_CHECKING:
    from service.credentials.service import CredentialService

from service.telemetry.metrics import OAUTH_REFRESHES

log = logging.getLogger("service.credentials.refresh")


class RefreshRefused(Conflict):
    """The provider rejected a refresh just now; the credential is in status ``error``."""


class Refresher:
    """Refreshes credentials' OAuth tokens for a ``CredentialService``."""

    def __init__(self, service: CredentialService, oauth: TokenClient, skew: timedelta) -> None:
        self.service = service
        self.oauth = oauth
        self.skew = skew
        """Reveal refreshes a token expiring within this margin (``CREDENTIALS_OAUTH_REFRESH_SKEW``)."""
        self._flights: SingleFlight[Credential] = SingleFlight()

    async def refresh_once(
        self, ctx: RequestContext, credential: Credential, *, force: bool, margin: timedelta
    ) -> Credential:
        """Refresh unless someone else already did (``force``: even if not due, unless it changed since read);
        the callers of this process share one try. Returns the credential after it."""
        seen = credential.kv_version
        return await self._flights.run(
            (credential.workspace_id, credential.id),
            lambda: self._refresh_locked(ctx, credential, seen, force=force, margin=margin),
        )

    async def _refresh_locked(
        self, ctx: RequestContext, seen_credential: Credential, seen: int, *, force: bool, margin: timedelta
    ) -> Credential:
        rejected: RefreshRejected | None = None
        failed: RefreshFailed | None = None
        async with database.transaction():
            credential = await self.service.locked(ctx, seen_credential.id)
            credential.check_refreshable()
            if not credential.due(margin) and (not force or credential.kv_version != seen):
                return credential  # fresh: refreshed (or updated) by someone else since this caller read it
            secret = await self.service.read_secret(ctx, credential, credential.kv_version)
            try:
                tokens = await self.oauth.refresh(_grant(credential.auth_type, secret))
                if credential.auth_type is AuthType.oauth_token_refresh_rotation and tokens.refresh_token is None:
                    raise RefreshRejected("the provider returned no new refresh_token for a rotating credential")
            except RefreshRejected as exc:
                OAUTH_REFRESHES.labels("rejected").inc()
                rejected = exc
                changes = credential.error_columns(exc.reason, ctx.actor_id)
            except RefreshFailed as exc:
                OAUTH_REFRESHES.labels("failed").inc()
                failed, changes = exc, {}
            else:
                OAUTH_REFRESHES.labels("ok").inc()
                plaintext = Secret(msgspec.json.encode(tokens.merged_into(secret)))
                version = await self._store(ctx, credential, plaintext)
                changes = {"kv_version": version, "expires_at": tokens.expires_at, "updated_at": now()}
            if changes:
                await rows.update(credential.id, changes)
            after = msgspec.structs.replace(credential, **changes)
            await _report(ctx, after, rejected, failed)
        if failed is not None:
            raise BadGateway(str(failed))
        if rejected is not None:
            log.warning("credential %s: refresh rejected (%s); status set to error", after.id, rejected.reason)
            raise RefreshRefused(f"The credential is in error: {rejected.reason}")
        log.info("credential %s: tokens refreshed (v%d)", after.id, after.kv_version)  # safe: id and version only
        return after

    async def _store(self, ctx: RequestContext, credential: Credential, plaintext: Secret) -> int:
        """Store refreshed tokens. The provider may already have invalidated the old refresh token, so a Vault
        hiccup here gets a few more tries before the new one is lost."""
        for attempt in range(2):
            try:
                return await self.service.write_version(ctx, credential, plaintext, "refresh")
            except VaultUnavailable:
                await asyncio.sleep(0.2 * 2**attempt)
        try:
            return await self.service.write_version(ctx, credential, plaintext, "refresh")
        except VaultUnavailable:
            log.error("credential %s: new tokens not stored; re-authorize it", credential.id)  # safe: the id only
            raise


def _grant(auth_type: AuthType, secret: dict[str, Any]) -> RefreshGrant:
    fields = secrets.read(auth_type, secret)
    assert isinstance(fields, secrets.RefreshableSecret)  # check_refreshable() let only these through
    return RefreshGrant(
        token_url=fields.token_url,
        refresh_token=fields.refresh_token,
        client_id=fields.client_id,
        client_secret=fields.client_secret,
        scope=fields.scope,
        post_client_secret=fields.token_endpoint_auth_method == "client_secret_post",  # noqa: S105 (a method name)
    )


_REFRESH_EVENTS = [EventType.credential_refresh_failed.value, EventType.credential_refresh_recovered.value]


async def _report(
    ctx: RequestContext, after: Credential, rejected: RefreshRejected | None, failed: RefreshFailed | None
) -> None:
    """``credential.refresh_failed`` for a failed refresh; ``credential.refresh_recovered`` for the first success
    after failures. In the refresh's transaction, so the event and the change commit together."""
    origin = events.of_request(ctx)
    if rejected is None and failed is None:
        if await outbox.last_of(after.id, _REFRESH_EVENTS) == EventType.credential_refresh_failed:
            await events.credential_event(
                EventType.credential_refresh_recovered,
                origin,
                after,
                version=after.kv_version,
                expires_at=after.expires_at,
            )
        return
    await events.credential_event(
        EventType.credential_refresh_failed,
        origin,
        after,
        status_reason=after.status_reason,
        error_class="rejected" if rejected is not None else "unavailable",
        error=str(rejected.reason if rejected is not None else failed)[:255],
        attempt=await outbox.consecutive_failures(after.id, *_REFRESH_EVENTS) + 1,
    )
