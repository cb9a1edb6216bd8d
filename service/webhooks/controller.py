"""HTTP handlers for ``/api/v1/webhooks`` (permission ``admin``)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from service.auth.principal import Permission
from service.context import Ctx
from service.openapi import SECURITY, errors, needs
from service.paging import check_skip
from service.webhooks.schemas import (
    DeliveryList,
    Queued,
    SecretRotated,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRead,
)
from service.webhooks.service import WEBHOOK_NOT_FOUND, WebhookService

NO_STORE = CacheControlHeader(no_store=True)
ERRORS = errors(400, 401, 403, 422, 503)
NOT_FOUND = {**ERRORS, **errors(e404=WEBHOOK_NOT_FOUND)}
Hooks = NamedDependency[WebhookService]


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["Webhooks"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = SECURITY
    opt = needs(Permission.admin)

    @post("/", status_code=201, cache_control=NO_STORE, summary="Create Webhook", responses=ERRORS)
    async def create_webhook(self, data: JSONBody[WebhookCreate], ctx: Ctx, webhooks: Hooks) -> WebhookCreated:
        """Subscribe a URL to the workspace's events. `secret`, which signs every delivery (Standard Webhooks), is
        in this response only."""
        return await webhooks.create(ctx, data)

    @get("/", summary="List Webhooks", responses=ERRORS)
    async def list_webhooks(self, ctx: Ctx, webhooks: Hooks) -> WebhookList:
        """The workspace's subscriptions (never their secrets)."""
        return await webhooks.list(ctx)

    @get("/{webhook_id:str}", summary="Get Webhook", responses=NOT_FOUND)
    async def get_webhook(self, webhook_id: FromPath[str], ctx: Ctx, webhooks: Hooks) -> WebhookRead:
        """One subscription."""
        return await webhooks.get(ctx, webhook_id)

    @delete("/{webhook_id:str}", status_code=204, summary="Delete Webhook", responses=NOT_FOUND)
    async def delete_webhook(self, webhook_id: FromPath[str], ctx: Ctx, webhooks: Hooks) -> None:
        """Delete a subscription; its undelivered events are dropped."""
        await webhooks.delete(ctx, webhook_id)

    @post(
        "/{webhook_id:str}/rotate-secret",
        status_code=200,
        cache_control=NO_STORE,
        summary="Rotate Webhook Secret",
        responses=NOT_FOUND,
    )
    async def rotate_webhook_secret(self, webhook_id: FromPath[str], ctx: Ctx, webhooks: Hooks) -> SecretRotated:
        """A new signing secret (in this response only); the old one keeps signing too until
        `previous_secret_valid_until` (CREDENTIALS_WEBHOOKS_SECRET_GRACE)."""
        return await webhooks.rotate(ctx, webhook_id)

    @post("/{webhook_id:str}/test", status_code=202, summary="Send Test Ping", responses=NOT_FOUND)
    async def test_webhook(self, webhook_id: FromPath[str], ctx: Ctx, webhooks: Hooks) -> Queued:
        """Queue a `webhook.test` event to this subscription."""
        return await webhooks.test(ctx, webhook_id)

    @get("/{webhook_id:str}/deliveries", summary="List Deliveries", responses=NOT_FOUND)
    async def list_deliveries(
        self,
        webhook_id: FromPath[str],
        ctx: Ctx,
        webhooks: Hooks,
        skip: Annotated[int, QueryParameter(ge=0, description="Deliveries to skip")] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Deliveries to return")] = 100,
    ) -> DeliveryList:
        """The subscription's deliveries, newest first: status, attempts, the last answer."""
        check_skip(skip)
        return await webhooks.deliveries(ctx, webhook_id, skip, limit)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=202,
        summary="Retry Delivery",
        responses={**ERRORS, **errors(e404="Webhook or delivery not found")},
    )
    async def retry_delivery(
        self, webhook_id: FromPath[str], delivery_id: FromPath[str], ctx: Ctx, webhooks: Hooks
    ) -> Queued:
        """Send a delivery again (a failed one too), with the same `webhook-id` and a new retry window."""
        return await webhooks.retry(ctx, webhook_id, delivery_id)
