"""The events' part of the app: the webhook service on app state, the dispatcher and the expiry warnings as
background tasks for the app's lifetime (each can be turned off with its interval setting = 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from litestar import Litestar, Request

from service.events.expiry import warn
from service.maintenance.jobs import every
from service.oauth.egress import EgressRules
from service.services import Services
from service.webhooks.dispatcher import Dispatcher
from service.webhooks.service import WebhookService

log = logging.getLogger("service.webhooks")


def webhook_rules(built: Services) -> EgressRules:
    """Webhook URLs obey the same egress rules as token endpoints (``CREDENTIALS_OAUTH_ALLOW_*``)."""
    oauth = built.settings.oauth
    return EgressRules(allow_loopback=oauth.allow_loopback, allow_private=oauth.allow_private)


@asynccontextmanager
async def event_jobs(app: Litestar) -> AsyncIterator[None]:
    built: Services = app.state.services
    settings = built.settings
    app.state.webhooks = WebhookService(
        built.store, webhook_rules(built), timedelta(seconds=settings.webhooks.secret_grace_seconds)
    )
    dispatcher: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    if settings.webhooks.dispatch_interval_seconds > 0:
        dispatcher = asyncio.create_task(
            Dispatcher(built.store, settings.webhooks, webhook_rules(built)).run(stop), name="webhook-dispatcher"
        )
    leads = settings.expiry.leads()

    async def expiry_round() -> None:
        sent = await warn(leads)
        if sent:
            log.info("expiry warnings: %d event(s)", sent)  # safe: a count

    try:
        async with every("expiry-warnings", settings.expiry.interval_seconds, expiry_round, jitter=True):
            yield
    finally:
        if dispatcher is not None:
            # Let the round in progress finish (its deliveries recorded); past the attempt deadline, cut it off:
            # what it had claimed is sent again when its lease ends.
            stop.set()
            await asyncio.wait([dispatcher], timeout=settings.webhooks.timeout_seconds + 2)
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher


def provide_webhooks(request: Request[Any, Any, Any]) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service
