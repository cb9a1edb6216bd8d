"""Bodies of ``/api/v1/webhooks``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from service.events.types import DEFAULT_TYPES, EventType
from service.schemas import ReadSchema, Schema

Url = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        description="Where events are POSTed (https; the egress rules apply, as for token endpoints)",
        examples=["https://hooks.example.com/credentials"],
    ),
]
EventTypes = Annotated[
    list[EventType],
    msgspec.Meta(
        min_length=1,
        max_length=32,
        description="The event types wanted; `credential.revealed` is sent only when named here",
        examples=[["credential.created", "credential.refresh_failed"]],
    ),
]
Description = Annotated[str, msgspec.Meta(max_length=255, description="What the subscription is for")]


class WebhookCreate(Schema, kw_only=True):
    """A subscription: where to send, and which events (every type but the opt-in ones when left out)."""

    url: Url
    event_types: EventTypes = msgspec.field(default_factory=lambda: list(DEFAULT_TYPES))
    description: Description | None = None


class WebhookRead(ReadSchema, frozen=True, kw_only=True):
    id: str
    url: str
    description: str | None
    event_types: list[str]
    status: str
    """``active``, or ``disabled`` (its endpoint failed for CREDENTIALS_WEBHOOKS_DISABLE_AFTER)."""
    status_reason: str | None
    failing_since: datetime | None
    previous_secret_valid_until: datetime | None
    """After a rotation: until when deliveries are also signed with the previous secret."""
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead, frozen=True, kw_only=True):
    secret: str
    """The signing secret (``whsec_...``, Standard Webhooks): shown in this response only."""


class WebhookList(ReadSchema, frozen=True, kw_only=True):
    webhooks: list[WebhookRead]


class SecretRotated(ReadSchema, frozen=True, kw_only=True):
    id: str
    secret: str
    """The new signing secret: shown in this response only."""
    previous_secret_valid_until: datetime


class DeliveryRead(ReadSchema, frozen=True, kw_only=True):
    id: str
    """The ``webhook-id`` header: the same at every attempt of this delivery."""
    event_id: str
    event_type: str
    status: str
    """``pending`` (retrying), ``delivered`` or ``failed`` (given up after CREDENTIALS_WEBHOOKS_RETRY_FOR)."""
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(ReadSchema, frozen=True, kw_only=True):
    deliveries: list[DeliveryRead]


class Queued(ReadSchema, frozen=True, kw_only=True):
    """A delivery queued (a test ping, or a retry); the dispatcher sends it at its next poll."""

    delivery_id: str | None = None
    event_id: str | None = None
