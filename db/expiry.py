"""All SQL on ``credential_expiry_notice``: which expiry warnings were already given.

The notice row is the once-only guarantee: inserting it and emitting the event happen in one transaction, and its
primary key (credential, lead time, expiry) makes a second instance's or a restarted instance's insert do nothing.
A credential whose expiry moves (a new token) gets warned again for its new expiry.
"""

from __future__ import annotations

from typing import Any

from db.credentials import VISIBLE
from db.tables import Credential


async def claim_due(lead_seconds: int, limit: int, skip_auth_types: list[str]) -> list[dict[str, Any]]:
    """Record notices for visible credentials expiring within ``lead_seconds`` (already expired when 0) that have
    none for this lead time and expiry yet; returns those credentials (only the first of two racing callers gets a
    row). ``skip_auth_types``: types whose ``expires_at`` is an access token's, which the service refreshes."""
    window = (
        "c.expires_at <= now()"
        if lead_seconds == 0
        else ("c.expires_at > now() AND c.expires_at <= now() + make_interval(secs => {})")
    )
    args: list[Any] = [] if lead_seconds == 0 else [lead_seconds]
    return list(
        await Credential.raw(
            "WITH noted AS (INSERT INTO credential_expiry_notice (credential_id, lead_seconds, expires_at) "
            f"SELECT c.id, {{}}, c.expires_at FROM credential c WHERE c.{VISIBLE} AND c.status <> 'revoked' "
            "AND c.auth_type <> ALL({}) "
            f"AND {window} AND NOT EXISTS (SELECT 1 FROM credential_expiry_notice n WHERE n.credential_id = c.id "
            "AND n.lead_seconds = {} AND n.expires_at = c.expires_at) ORDER BY c.expires_at LIMIT {} "
            "ON CONFLICT DO NOTHING RETURNING credential_id, expires_at) "
            "SELECT c.id, c.workspace_id, c.label, c.auth_type, c.provider, c.status, noted.expires_at "
            "FROM noted JOIN credential c ON c.id = noted.credential_id",
            lead_seconds,
            skip_auth_types,
            *args,
            lead_seconds,
            limit,
        )
    )


async def forget_gone() -> None:
    """Drop notices of credentials that no longer exist."""
    await Credential.raw(
        "DELETE FROM credential_expiry_notice n "
        "WHERE NOT EXISTS (SELECT 1 FROM credential c WHERE c.id = n.credential_id)"
    )
