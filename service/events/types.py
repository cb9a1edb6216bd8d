"""The event types and their payloads. A payload carries ids, the workspace, the actor, the request id and times:
never a secret, never a secret's length or hash."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class EventType(enum.StrEnum):
    """Every event the service emits (the ``type`` of a webhook body)."""

    credential_created = "credential.created"
    credential_updated = "credential.updated"
    credential_deleted = "credential.deleted"
    credential_restored = "credential.restored"
    credential_purged = "credential.purged"
    credential_disabled = "credential.disabled"
    credential_enabled = "credential.enabled"
    credential_revoked = "credential.revoked"
    credential_expiring = "credential.expiring"
    credential_expired = "credential.expired"
    credential_refresh_failed = "credential.refresh_failed"
    credential_refresh_recovered = "credential.refresh_recovered"
    credential_revealed = "credential.revealed"
    api_key_created = "api_key.created"
    api_key_revoked = "api_key.revoked"
    webhook_disabled = "webhook.disabled"
    webhook_test = "webhook.test"


OPT_IN = frozenset({EventType.credential_revealed})
"""Sent only to subscriptions that name them (a reveal is frequent, and most subscribers do not want it)."""
DEFAULT_TYPES = tuple(t for t in EventType if t not in OPT_IN and t is not EventType.webhook_test)
"""What a subscription that names no types receives."""
SUBSCRIBABLE = tuple(t for t in EventType if t is not EventType.webhook_test)


class Payload(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What every event's ``data`` holds; fields that do not apply to a type are left out."""

    workspace_id: str
    actor: str
    """Who made the change: an API key's id, a user's ``sub``, or a job (``purge``, ``expiry``, ``refresh``)."""
    request_id: str
    """The API request (or job run) that made it: the same id is in Vault's audit log."""
    occurred_at: datetime


class RevocationOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the provider answered to the RFC 7009 revocation (``revoked``, ``failed`` or ``not_configured``)."""

    outcome: str
    detail: str | None = None
    """Why it failed: an HTTP status or an error class, never a token."""


class CredentialData(Payload, frozen=True, kw_only=True, omit_defaults=True):
    credential_id: str
    label: str | None = None
    auth_type: str | None = None
    provider: str | None = None
    status: str | None = None
    status_reason: str | None = None
    changed_fields: list[str] | None = None
    """``credential.updated``: which fields changed (``credentials`` for a new secret version)."""
    version: int | None = None
    """The secret's KV version after the change (``created``, ``updated``, refresh events)."""
    expires_at: datetime | None = None
    lead_seconds: int | None = None
    """``credential.expiring``: the lead time this warning is for."""
    error_class: str | None = None
    """``credential.refresh_failed``: ``rejected`` (the provider refused; status ``error``) or ``unavailable``."""
    error: str | None = None
    attempt: int | None = None
    """``credential.refresh_failed``: consecutive failed refreshes, this one included."""
    revocation: RevocationOutcome | None = None
    """``credential.revoked`` and ``credential.purged`` of OAuth credentials: the revocation at the provider."""


class ApiKeyData(Payload, frozen=True, kw_only=True, omit_defaults=True):
    api_key_id: str
    label: str | None = None
    permissions: list[str] | None = None


class WebhookData(Payload, frozen=True, kw_only=True, omit_defaults=True):
    webhook_id: str
    url: str | None = None
    reason: str | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook body (the Standard Webhooks shape): the same bytes at every attempt."""

    type: EventType
    timestamp: datetime
    data: CredentialData | ApiKeyData | WebhookData
