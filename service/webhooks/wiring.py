"""The events' part of the app: the webhook service on app state, the dispatcher and the expiry warnings as
background tasks for the app's lifetime (each can be turned off with its interval setting = 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from litestar import Litestar, Request

from service.context import Ctx
from service.events.expiry import warn
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
    leads, interval = settings.expiry.leads(), settings.expiry.interval_seconds

    async def expiry_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval * random.uniform(0.5, 1.5))  # noqa: S311 (not crypto)
            if stop.is_set():
                return
            try:
                sent = await warn(leads)
            except Exception as exc:
                log.error("expiry warnings failed: %s", type(exc).__name__)  # safe: class name only
            else:
                if sent:
                    log.info("expiry warnings: %d event(s)", sent)  # safe: a count

    tasks = [] if dispatcher is None else [dispatcher]
    if interval > 0:
        tasks.append(asyncio.create_task(expiry_loop(), name="expiry-warnings"))
    try:
        yield
    finally:
        # Stopped between rounds rather than cancelled inside a transaction (a cancelled transaction can keep its
        # connection from the pool); what is still running after the attempt deadline is cut off: a delivery it
        # had claimed is sent again when its lease ends, an expiry pass rolls back and is redone.
        stop.set()
        if tasks:
            await asyncio.wait(tasks, timeout=settings.webhooks.timeout_seconds + 2)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def provide_webhooks(request: Request[Any, Any, Any], ctx: Ctx) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service
