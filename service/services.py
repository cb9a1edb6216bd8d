"""The one place the service's parts are built from the settings: for the app, for ``credctl`` and for the bench.

``Services.from_settings`` opens the two resources (the Postgres pool; the Vault client with its worker pool and
its token's keeper), each in a context manager that fails the start-up with what went wrong, and builds the
services on them. Everything that runs the credential logic gets the same objects, configured the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import msgspec

from db.database import connection_pool
from service.auth.tokens import TokenVerifier
from service.config import DatabaseSettings, Settings
from service.credentials.service import CredentialService, Lifecycle
from service.faults import FaultPoints
from service.grants.service import GrantService
from service.oauth.client import ClientPolicy, TokenClient
from service.oauth.egress import EgressRules
from service.proxy.check import CheckService
from service.proxy.service import ProxyService
from service.proxy.upstream import UpstreamPolicy, Upstreams
from service.proxy.usage import usage_writer
from service.startup import StartupError, database_errors, vault_errors
from vault.store import ANY_WORKSPACE, SERVICE_ACTOR, CallContext, SecretStore

log = logging.getLogger("service")

ONE_OFF_WORKERS = 8
"""Vault threads and Postgres connections of a one-off command (``credctl purge``, ``reconcile``, ...)."""
STARTUP = CallContext(request_id="startup", actor=SERVICE_ACTOR, workspace=ANY_WORKSPACE)


@dataclass(frozen=True, slots=True)
class Services:
    """The service's parts, built on open resources."""

    settings: Settings
    store: SecretStore
    credentials: CredentialService
    tokens: TokenVerifier | None
    """Verifies user tokens; None when none is configured (then only API keys are accepted)."""
    proxy: ProxyService
    grants: GrantService
    checks: CheckService

    @classmethod
    @asynccontextmanager
    async def from_settings(cls, settings: Settings, *, one_off: bool = False) -> AsyncIterator[Services]:
        """Open Postgres and Vault and build the services; ``one_off``: small pools, for a command."""
        database = settings.database
        workers = settings.vault.workers
        if one_off:
            database = msgspec.structs.replace(database, pool_min=1, pool_max=ONE_OFF_WORKERS)
            workers = ONE_OFF_WORKERS
        async with (
            open_database(database),
            open_secret_store(settings, workers) as store,
            open_upstreams(settings) as upstreams,
            usage_writer() as usage,
        ):
            credentials = credential_service(settings, store)
            proxy = ProxyService(credentials, upstreams, usage)
            yield cls(
                settings=settings,
                store=store,
                credentials=credentials,
                tokens=TokenVerifier.from_settings(settings.jwt),
                proxy=proxy,
                grants=GrantService(
                    credentials, settings.proxy.grant_default_ttl_seconds, settings.proxy.grant_max_ttl_seconds
                ),
                checks=CheckService(proxy),
            )


def credential_service(settings: Settings, store: SecretStore) -> CredentialService:
    lifecycle, oauth = settings.lifecycle, settings.oauth
    policy = ClientPolicy(
        timeout=oauth.timeout_seconds,
        max_attempts=oauth.max_attempts,
        backoff=oauth.retry_backoff_seconds,
        max_response_bytes=oauth.max_response_bytes,
        egress=EgressRules(allow_loopback=oauth.allow_loopback, allow_private=oauth.allow_private),
    )
    return CredentialService(
        store,
        Lifecycle(
            max_versions=lifecycle.max_versions,
            delete_retention=timedelta(seconds=lifecycle.delete_retention_seconds),
            exact_count_limit=lifecycle.list_exact_count_limit,
        ),
        TokenClient(policy),
        refresh_skew=timedelta(seconds=oauth.refresh_skew_seconds),
        faults=FaultPoints(kill_at=settings.testing.fault_point),
        idempotency_ttl=timedelta(seconds=settings.idempotency.ttl_seconds),
    )


@asynccontextmanager
async def open_upstreams(settings: Settings) -> AsyncIterator[Upstreams]:
    """The proxy's HTTP clients (one per upstream address), closed with the service."""
    oauth, proxy = settings.oauth, settings.proxy
    upstreams = Upstreams(
        UpstreamPolicy(
            rules=EgressRules(allow_loopback=oauth.allow_loopback, allow_private=oauth.allow_private),
            timeout=proxy.timeout_seconds,
            max_connections=proxy.max_connections,
            max_response_bytes=proxy.max_response_bytes,
        )
    )
    try:
        yield upstreams
    finally:
        await upstreams.aclose()


@asynccontextmanager
async def open_database(settings: DatabaseSettings) -> AsyncIterator[None]:
    """The Postgres pool; fails with a ``StartupError`` naming DATABASE_URL if Postgres cannot be used."""
    async with contextlib.AsyncExitStack() as resources:
        with database_errors(settings):
            await resources.enter_async_context(
                connection_pool(
                    settings.url,
                    min_size=settings.pool_min,
                    max_size=settings.pool_max,
                    connect_timeout=settings.connect_timeout,
                )
            )
        yield


@asynccontextmanager
async def open_secret_store(settings: Settings, workers: int) -> AsyncIterator[SecretStore]:
    """The Vault client, its worker pool and its token's keeper; fails if Vault is unreachable, the AppRole login
    or the token is refused, or the token is a root token outside dev mode."""
    vault = settings.vault
    store = SecretStore.connect(
        vault.addrs,
        vault.login(),
        workers=workers,
        timeout=vault.timeout,
        transit_mount=vault.transit_mount,
        transit_key=vault.transit_key,
        kv_mount=vault.kv_mount,
        failover_seconds=vault.failover_seconds,
        cacert=vault.cacert,
    )
    keeper: asyncio.Task[None] | None = None
    try:
        with vault_errors(vault):
            token = await store.start(STARTUP)
        if token.is_root:
            if not settings.dev_mode:
                raise StartupError(
                    "the Vault token is a root token, which the service accepts only in dev mode "
                    "(CREDENTIALS_DEV_MODE=true); give it AppRole credentials (VAULT_ROLE_ID, VAULT_SECRET_ID) with "
                    "the credentials-service policy that `credctl vault-bootstrap` writes"
                )
            log.warning(
                "DEV MODE: the service calls Vault with a root token; it can do anything in Vault. "
                "Production uses AppRole and the credentials-service policy"
            )
        log.info(
            "Vault identity: %s, policies %s",
            "AppRole login" if vault.uses_approle else "static token",
            ", ".join(token.policies),
        )
        keeper = asyncio.create_task(store.keep_token_fresh(), name="vault-token-keeper")
        yield store
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await store.aclose()
