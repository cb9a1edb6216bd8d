"""Writing events: call ``emit`` inside the transaction of the change, so the event commits with it or not at all."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from db import outbox
from service.events.types import ApiKeyData, CredentialData, Envelope, EventType, WebhookData


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a change, and in which request: every payload's ``workspace_id``, ``actor`` and ``request_id``."""

    workspace_id: str
    actor: str
    request_id: str


def of_request(ctx: Any) -> Origin:
    """The origin of a ``service.context.RequestContext``."""
    return Origin(workspace_id=ctx.workspace_id, actor=ctx.actor_id, request_id=ctx.request_id)


def now() -> datetime:
    return datetime.now(UTC)


async def emit(
    event_type: EventType,
    data: CredentialData | ApiKeyData | WebhookData,
    *,
    only_webhook: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write one event to the outbox (and a delivery for each subscription that wants it); returns its id."""
    event_id = uuid.uuid4()
    body = msgspec.json.encode(Envelope(type=event_type, timestamp=data.occurred_at, data=data)).decode()
    credential_id = uuid.UUID(data.credential_id) if isinstance(data, CredentialData) else None
    await outbox.emit(
        event_id, data.workspace_id, event_type.value, credential_id, body, data.occurred_at, only_webhook=only_webhook
    )
    return event_id


async def credential_event(event_type: EventType, origin: Origin, credential: Any, **fields: Any) -> uuid.UUID:
    """An event about ``credential`` (a ``service.credentials.model.Credential``; duck-typed so this module does
    not import the credentials slice)."""
    status = getattr(credential, "status", None)
    auth_type = getattr(credential.auth_type, "value", credential.auth_type)
    data = CredentialData(
        workspace_id=origin.workspace_id,
        actor=origin.actor,
        request_id=origin.request_id,
        occurred_at=fields.pop("occurred_at", None) or now(),
        credential_id=str(credential.id),
        label=credential.label,
        auth_type=str(auth_type),
        provider=credential.provider,
        status=None if status is None else str(getattr(status, "value", status)),
        **fields,
    )
    return await emit(event_type, data)
