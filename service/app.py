"""The app factory: ``uvicorn --factory service.app:create_app``. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Response

from db.engine import connection_pool
from db.tables import Credential
from service.access_api import ApiKeyController, get_session
from service.api import CredentialController
from service.auth import Principal, auth_guard, provide_principal
from service.config import Settings
from service.credentials import CredentialService, Lifecycle
from service.errors import EXCEPTION_HANDLERS
from service.identity import TokenVerifier
from service.oauth import RefreshPolicy, TokenClient
from service.request_id import provide_request_id, request_id_middleware
from service.schemas import Health
from vault.store import SecretStore

log = logging.getLogger("service")

LITESTAR_400 = "Bad request syntax or unsupported method"
"""The description of the 400 Litestar documents for validation errors (which this service answers with 422)."""


@asynccontextmanager
async def database(app: Litestar) -> AsyncIterator[None]:
    """The Postgres pool for the app's lifetime; fails the start-up if Postgres cannot be reached."""
    settings: Settings = app.state.settings
    async with connection_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max):
        yield


def make_store(settings: Settings, workers: int | None = None) -> SecretStore:
    """The secret store as the settings configure it: AppRole when a role id and secret id are set, else the token."""
    approle = bool(settings.vault_role_id and settings.vault_secret_id)
    secret_id_file = settings.vault_secret_id_file
    return SecretStore.connect(
        settings.vault_addr,
        None if approle else settings.vault_token,
        role_id=settings.vault_role_id if approle else None,
        # From a file, the secret id is read again at each login: one rotated in place needs no restart.
        secret_id=(lambda: Path(secret_id_file).read_text().strip()) if secret_id_file else settings.vault_secret_id,
        approle_mount=settings.vault_approle_mount,
        workers=workers or settings.vault_workers,
        timeout=settings.vault_timeout,
        transit_mount=settings.transit_mount,
        transit_key=settings.transit_key,
        kv_mount=settings.kv_mount,
    )


@asynccontextmanager
async def secret_store(app: Litestar) -> AsyncIterator[None]:
    """The Vault client, its worker pool and its token's keeper; fails the start-up if Vault is unreachable, the
    AppRole login or the token is refused, or the token is a root token outside dev mode."""
    settings: Settings = app.state.settings
    approle = bool(settings.vault_role_id and settings.vault_secret_id)
    store = make_store(settings)
    keeper: asyncio.Task[None] | None = None
    try:
        token = await store.start()
        if token.is_root:
            if not settings.dev_mode:
                raise RuntimeError(
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
            "AppRole login" if approle else "static token",
            ", ".join(token.policies),
        )
        keeper = asyncio.create_task(store.keep_token_fresh(), name="vault-token-keeper")
        app.state.store = store
        lifecycle = Lifecycle(
            max_versions=settings.max_versions,
            delete_retention=timedelta(seconds=settings.delete_retention_seconds),
            exact_count_limit=settings.list_exact_count_limit,
        )
        oauth = TokenClient(RefreshPolicy.from_settings(settings))
        app.state.credential_service = CredentialService(store, lifecycle, oauth)
        yield
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        store.close()


@asynccontextmanager
async def periodic_purge(app: Litestar) -> AsyncIterator[None]:
    """Destroy the secrets of deletions past their retention window, every ``purge_interval_seconds``."""
    settings: Settings = app.state.settings
    if settings.purge_interval_seconds == 0:
        yield
        return

    async def loop() -> None:
        service: CredentialService = app.state.credential_service
        while True:
            await asyncio.sleep(settings.purge_interval_seconds)
            try:
                purged = await service.purge()
            except Exception:  # a failed round is retried at the next one
                log.exception("purge failed")
            else:
                if purged:
                    log.info("purged %d deleted credential(s) past the retention window", purged)

    task = asyncio.create_task(loop(), name="purge")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def proactive_refresh(app: Litestar) -> AsyncIterator[None]:
    """Refresh OAuth tokens that expire within the proactive window, every ``oauth_proactive_interval_seconds``.

    Each pass starts after a jittered pause (so instances started together do not run in step) and spreads its
    refreshes over up to half the interval; the row lock keeps it single-flight with reveals and other instances.
    """
    settings: Settings = app.state.settings
    interval = settings.oauth_proactive_interval_seconds
    if interval == 0:
        yield
        return

    async def loop() -> None:
        service: CredentialService = app.state.credential_service
        while True:
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not cryptography)
            try:
                report = await service.refresh_due(spread=interval / 2)
            except Exception as exc:
                log.error("proactive token refresh pass failed: %s", type(exc).__name__)  # safe: class name only
            else:
                if report.due:
                    log.info("proactive token refresh: %s", report.summary())  # safe: counts only

    task = asyncio.create_task(loop(), name="proactive-refresh")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def provide_credential_service(request: Request[Any, Any, Any]) -> CredentialService:
    service: CredentialService = request.app.state.credential_service
    return service


@get("/health/live", include_in_schema=True, tags=["Health"], summary="Liveness")
async def live() -> Health:
    """The process is up and serving HTTP."""
    return Health(status="ok")


@get("/health/ready", include_in_schema=True, tags=["Health"], summary="Readiness")
async def ready(request: Request[Any, Any, Any]) -> Response[Health]:
    """Postgres and Vault both answer; 503 otherwise (with the failing check named)."""
    checks = {"database": "ok", "vault": "ok"}
    try:
        await Credential.raw("SELECT 1")
    except Exception:
        checks["database"] = "unavailable"
    store: SecretStore = request.app.state.store
    if not await store.ping():
        checks["vault"] = "unavailable"
    ok = all(value == "ok" for value in checks.values())
    return Response(Health(status="ok" if ok else "unavailable", checks=checks), status_code=200 if ok else 503)


def drop_unsent_400s(app: Litestar) -> None:
    """Litestar documents a 400 (``LITESTAR_400``) for every handler with parameters; this service
    answers validation errors with the 422 each operation declares, so that 400 would describe a response that is
    never sent. A 400 a handler declares itself (a user of several workspaces without X-Workspace-Id) stays."""
    for path_item in (app.openapi_schema.paths or {}).values():
        for operation in (path_item.get, path_item.post, path_item.put, path_item.delete):
            if operation is None or not operation.responses:
                continue
            declared = operation.responses.get("400")
            if declared is not None and getattr(declared, "description", None) == LITESTAR_400:
                operation.responses.pop("400")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    # Built here, so that an unreadable or wrong key file stops the start-up with the setting's name.
    token_verifier = TokenVerifier.from_settings(settings)
    api = Router(
        path="/api/v1",
        route_handlers=[CredentialController, ApiKeyController, get_session],
        guards=[auth_guard],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            "credential_service": Provide(provide_credential_service, sync_to_thread=False),
            "request_id": Provide(provide_request_id, sync_to_thread=False),
        },
        signature_namespace={"Principal": Principal, "CredentialService": CredentialService},
    )
    return Litestar(
        route_handlers=[api, live, ready],
        lifespan=[database, secret_store, periodic_purge, proactive_refresh],
        on_startup=[drop_unsent_400s],
        middleware=[request_id_middleware],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Credentials service",
            version="0.1.0",
            description="Mielto's Credentials API, with secrets in Vault (transit + KV v2) and metadata in Postgres.",
            path="/schema",
            components=Components(security_schemes={"DualAuthScheme": SecurityScheme(type="http", scheme="bearer")}),
        ),
        logging_config=LoggingConfig(
            root={"level": settings.log_level, "handlers": ["queue_listener"]},
            log_exceptions="never",
        ),
        state=State({"settings": settings, "token_verifier": token_verifier}),
        debug=False,
    )
