"""The operations behind ``/api/v1/webhooks``: subscriptions in Postgres, their signing secrets sealed by Vault.

A signing secret is shown once, at creation or rotation. Postgres keeps only its transit ciphertext, bound to the
workspace and the subscription (context ``workspace:<wid>|webhook:<id>``), so a database dump holds no usable secret
and a ciphertext copied to another row or workspace does not decrypt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from db import database
from db import webhooks as rows
from service.context import RequestContext
from service.errors import NotFound, RequestInvalid
from service.events import outbox as events
from service.events.types import EventType, WebhookData
from service.oauth import egress
from service.oauth.egress import EgressRefused, EgressRules
from service.webhooks import signing
from service.webhooks.schemas import (
    DeliveryList,
    DeliveryRead,
    Queued,
    SecretRotated,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRead,
)
from vault.secret import Secret
from vault.store import SecretStore

WEBHOOK_NOT_FOUND = "Webhook not found"
DELIVERY_NOT_FOUND = "Delivery not found"


def owner(webhook_id: uuid.UUID | str) -> str:
    """The transit context's owner part of a subscription's secret."""
    return f"webhook:{webhook_id}"


def _id(value: str, message: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(message) from None


def to_read(row: dict[str, Any]) -> WebhookRead:
    return WebhookRead(
        id=str(row["id"]),
        url=row["url"],
        description=row["description"],
        event_types=list(row["event_types"]),
        status=row["status"],
        status_reason=row["status_reason"],
        failing_since=row["failing_since"],
        previous_secret_valid_until=row["previous_valid_until"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass(frozen=True, slots=True)
class WebhookService:
    store: SecretStore
    rules: EgressRules
    secret_grace: timedelta
    resolve_within: float = 5.0

    async def create(self, ctx: RequestContext, data: WebhookCreate) -> WebhookCreated:
        try:
            await egress.check_url(data.url, self.rules, self.resolve_within)
        except EgressRefused as exc:
            message = str(exc).replace("token_url", "url")
            raise RequestInvalid.at(["body", "url"], message, "url_refused") from None
        webhook_id, secret, when = uuid.uuid4(), signing.new_secret(), events.now()
        ciphertext = await self.store.seal(ctx.vault(), owner(webhook_id), Secret(secret.encode()))
        row = {
            "id": webhook_id,
            "workspace_id": ctx.workspace_id,
            "url": data.url,
            "description": data.description,
            "event_types": sorted({t.value for t in data.event_types}),
            "secret_ciphertext": ciphertext,
            "status": "active",
            "created_by": ctx.actor_id,
            "created_at": when,
            "updated_at": when,
        }
        await rows.insert(row)
        read = to_read({**row, "previous_valid_until": None, "status_reason": None, "failing_since": None})
        return WebhookCreated(**{name: getattr(read, name) for name in WebhookRead.__struct_fields__}, secret=secret)

    async def list(self, ctx: RequestContext) -> WebhookList:
        return WebhookList(webhooks=[to_read(row) for row in await rows.of_workspace(ctx.workspace_id)])

    async def get(self, ctx: RequestContext, webhook_id: str) -> WebhookRead:
        row = await rows.get(ctx.workspace_id, _id(webhook_id, WEBHOOK_NOT_FOUND))
        if row is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        return to_read(row)

    async def delete(self, ctx: RequestContext, webhook_id: str) -> None:
        """The subscription and its pending deliveries go at once (the ciphertext of its secret with them)."""
        if not await rows.remove(ctx.workspace_id, _id(webhook_id, WEBHOOK_NOT_FOUND)):
            raise NotFound(WEBHOOK_NOT_FOUND)

    async def rotate(self, ctx: RequestContext, webhook_id: str) -> SecretRotated:
        wid = _id(webhook_id, WEBHOOK_NOT_FOUND)
        await self.get(ctx, webhook_id)
        secret, when = signing.new_secret(), events.now()
        ciphertext = await self.store.seal(ctx.vault(), owner(wid), Secret(secret.encode()))
        until = when + self.secret_grace
        if not await rows.rotate(ctx.workspace_id, wid, ciphertext, until, when):
            raise NotFound(WEBHOOK_NOT_FOUND)
        return SecretRotated(id=str(wid), secret=secret, previous_secret_valid_until=until)

    async def test(self, ctx: RequestContext, webhook_id: str) -> Queued:
        """Queue a ``webhook.test`` ping to this subscription only (whatever types it wants)."""
        hook = await self.get(ctx, webhook_id)
        origin = events.of_request(ctx)
        async with database.transaction():
            event_id = await events.emit(
                EventType.webhook_test,
                WebhookData(
                    workspace_id=origin.workspace_id,
                    actor=origin.actor,
                    request_id=origin.request_id,
                    occurred_at=events.now(),
                    webhook_id=hook.id,
                    url=hook.url,
                ),
                only_webhook=uuid.UUID(hook.id),
            )
        return Queued(event_id=str(event_id))

    async def deliveries(self, ctx: RequestContext, webhook_id: str, skip: int, limit: int) -> DeliveryList:
        wid = _id(webhook_id, WEBHOOK_NOT_FOUND)
        await self.get(ctx, webhook_id)
        found = await rows.deliveries(ctx.workspace_id, wid, skip=skip, limit=limit)
        return DeliveryList(
            deliveries=[
                DeliveryRead(
                    id=signing.message_id(row["id"]),
                    event_id=str(row["event_id"]),
                    event_type=row["type"],
                    status=row["status"],
                    attempts=row["attempts"],
                    next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
                    last_attempt_at=row["last_attempt_at"],
                    last_status_code=row["last_status_code"],
                    last_error=row["last_error"],
                    created_at=row["created_at"],
                    delivered_at=row["delivered_at"],
                )
                for row in found
            ]
        )

    async def retry(self, ctx: RequestContext, webhook_id: str, delivery_id: str) -> Queued:
        """Send a delivery again (whatever its status), with a new retry window; the same ``webhook-id``."""
        wid = _id(webhook_id, WEBHOOK_NOT_FOUND)
        did = _id(delivery_id.removeprefix("msg_"), DELIVERY_NOT_FOUND)
        if not await rows.retry(ctx.workspace_id, wid, did):
            raise NotFound(DELIVERY_NOT_FOUND)
        return Queued(delivery_id=signing.message_id(did))
