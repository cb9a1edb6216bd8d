"""Standard Webhooks signatures (the ``standardwebhooks`` package): new secrets, headers for one attempt."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret in the scheme's format (``whsec_`` + base64 of 32 random bytes)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def message_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id``: one per (event, subscription), the same at every attempt, so receivers can deduplicate."""
    return f"msg_{delivery_id.hex}"


def headers(
    delivery_id: uuid.UUID, body: str, signing_secrets: list[str], when: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with every secret given (the current one and,
    during a rotation's grace period, the previous one: receivers accept any valid signature)."""
    when = when or datetime.now(UTC)
    msg_id = message_id(delivery_id)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, when, body) for s in signing_secrets),
        "content-type": "application/json",
    }
