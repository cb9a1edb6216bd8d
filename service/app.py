"""The app factory: ``uvicorn --factory service.app:create_app``. Wiring only; nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from litestar import Litestar, Request, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.response import Response

from db import database
from service.access.controller import ApiKeyController, get_session
from service.auth.guard import auth_guard
from service.auth.tokens import TokenVerifier
from service.config import Settings
from service.context import RequestContext, provide_context, request_id_middleware
from service.credentials.controller import CredentialController
from service.credentials.service import CredentialService
from service.errors import EXCEPTION_HANDLERS
from service.maintenance.jobs import scheduled
from service.openapi import COMPONENTS, WORKSPACE_HEADER, follow_fastapi, operation_id
from service.openapi_links import link_created_credential
from service.schemas import ReadSchema
from service.services import Services
from vault.store import ANY_WORKSPACE, SERVICE_ACTOR, CallContext

HEALTH_CHECK = CallContext(request_id="health", actor=SERVICE_ACTOR, workspace=ANY_WORKSPACE)


class Health(ReadSchema, frozen=True, kw_only=True):
    status: str
    checks: dict[str, str] = {}  # noqa: RUF012 (msgspec copies mutable defaults per instance)


@asynccontextmanager
async def services(app: Litestar) -> AsyncIterator[None]:
    """Postgres and Vault, and the services built on them, for the app's lifetime."""
    async with Services.from_settings(app.state.settings) as built:
        app.state.services = built
        yield


@asynccontextmanager
async def jobs(app: Litestar) -> AsyncIterator[None]:
    """The purge and the proactive refresh, on their intervals."""
    built: Services = app.state.services
    lifecycle, oauth = built.settings.lifecycle, built.settings.oauth
    async with scheduled(
        built.credentials,
        purge_interval=lifecycle.purge_interval_seconds,
        refresh_interval=oauth.proactive_interval_seconds,
        refresh_window=timedelta(seconds=oauth.proactive_window_seconds),
    ):
        yield


def provide_service(request: Request[Any, Any, Any]) -> CredentialService:
    built: Services = request.app.state.services
    return built.credentials


@get("/health/live", tags=["Health"], summary="Liveness")
async def live() -> Health:
    """The process is up and serving HTTP."""
    return Health(status="ok")


@get("/health/ready", tags=["Health"], summary="Readiness")
async def ready(request: Request[Any, Any, Any]) -> Response[Health]:
    """Postgres and Vault both answer; 503 otherwise (with the failing check named)."""
    checks = {"database": "ok", "vault": "ok"}
    try:
        await database.ping()
    except Exception:
        checks["database"] = "unavailable"
    built: Services = request.app.state.services
    if not await built.store.ping(HEALTH_CHECK):
        checks["vault"] = "unavailable"
    ok = all(value == "ok" for value in checks.values())
    return Response(Health(status="ok" if ok else "unavailable", checks=checks), status_code=200 if ok else 503)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    # Read here, so that an unreadable or wrong key file stops the start-up with the setting's name.
    TokenVerifier.from_settings(settings.jwt)
    api = Router(
        path="/api/v1",
        route_handlers=[CredentialController, ApiKeyController, get_session],
        guards=[auth_guard],
        parameters=WORKSPACE_HEADER,
        dependencies={
            "ctx": Provide(provide_context, sync_to_thread=False),
            # Not "credentials": Litestar would take a body field of that name for this dependency in its errors.
            "service": Provide(provide_service, sync_to_thread=False),
        },
        signature_namespace={"RequestContext": RequestContext, "CredentialService": CredentialService},
    )
    app = Litestar(
        route_handlers=[api, live, ready],
        lifespan=[services, jobs],
        middleware=[request_id_middleware],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Credentials service",
            version="0.1.0",
            description="Mielto's Credentials API, with secrets in Vault (transit + KV v2) and metadata in Postgres.",
            path="/schema",
            components=COMPONENTS,
            operation_id_creator=operation_id,
            use_handler_docstrings=True,
        ),
        logging_config=LoggingConfig(
            root={"level": settings.log_level, "handlers": ["queue_listener"]},
            log_exceptions="never",
        ),
        state=State({"settings": settings}),
        debug=False,
    )
    follow_fastapi(app)
    link_created_credential(app)
    return app
