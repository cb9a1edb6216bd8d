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


def record(
    event_type: EventType, data: CredentialData | ApiKeyData | WebhookData, from_row: tuple[str, ...] = ()
) -> outbox.EventRow:
    """The event as the outbox stores it, not yet written (``emit`` writes it; ``db.credentials`` can write it in
    the statement of the change it reports)."""
    body = msgspec.json.encode(Envelope(type=event_type, timestamp=data.occurred_at, data=data)).decode()
    credential_id = uuid.UUID(data.credential_id) if isinstance(data, CredentialData) else None
    return outbox.EventRow(
        uuid.uuid4(), data.workspace_id, event_type.value, credential_id, body, data.occurred_at, from_row
    )


async def emit(
    event_type: EventType,
    data: CredentialData | ApiKeyData | WebhookData,
    *,
    only_webhook: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write one event to the outbox (and a delivery for each subscription that wants it); returns its id."""
    event = record(event_type, data)
    await outbox.emit(event, only_webhook=only_webhook)
    return event.id


def credential_record(event_type: EventType, origin: Origin, credential: Any, **fields: Any) -> outbox.EventRow:
    """An event about ``credential`` (a ``service.credentials.model.Credential``; duck-typed so this module does
    not import the credentials slice), not yet written."""
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
    return record(event_type, data)


ROW_FIELDS = ("label", "auth_type", "provider", "status")
"""The fields of a credential event that the credential's row holds, in columns of the same names."""


def credential_record_of_row(
    event_type: EventType, origin: Origin, credential_id: uuid.UUID, **fields: Any
) -> outbox.EventRow:
    """An event about the credential whose row the statement recording it changes: ``ROW_FIELDS`` are taken from
    that row by the statement (``db.outbox.recording``), so the change and its event need no read before them."""
    data = CredentialData(
        workspace_id=origin.workspace_id,
        actor=origin.actor,
        request_id=origin.request_id,
        occurred_at=fields.pop("occurred_at", None) or now(),
        credential_id=str(credential_id),
        **fields,
    )
    return record(event_type, data, ROW_FIELDS)


async def credential_event(event_type: EventType, origin: Origin, credential: Any, **fields: Any) -> uuid.UUID:
    """Write an event about ``credential`` (``credential_record``)."""
    event = credential_record(event_type, origin, credential, **fields)
    await outbox.emit(event)
    return event.id
