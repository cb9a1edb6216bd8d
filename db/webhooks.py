"""All SQL on the ``webhook`` and ``webhook_delivery`` tables: subscriptions, and the dispatcher's claims.

A dispatcher claims due deliveries with ``FOR UPDATE SKIP LOCKED`` and marks them leased until a deadline, then
sends them outside any transaction: two instances never claim the same delivery, and a delivery whose instance
died mid-send is claimed again once its lease has passed (at least once; the same ``webhook-id``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from db.tables import Credential

WEBHOOK_COLUMNS = (
    "id",
    "workspace_id",
    "url",
    "description",
    "event_types",
    "secret_ciphertext",
    "previous_secret_ciphertext",
    "previous_valid_until",
    "status",
    "status_reason",
    "failing_since",
    "created_by",
    "created_at",
    "updated_at",
)
_WEBHOOK = ", ".join(WEBHOOK_COLUMNS)
DELIVERY_COLUMNS = (
    "d.id",
    "d.webhook_id",
    "d.event_id",
    "e.type",
    "d.status",
    "d.attempts",
    "d.next_attempt_at",
    "d.last_attempt_at",
    "d.last_status_code",
    "d.last_error",
    "d.created_at",
    "d.delivered_at",
)
_DELIVERY = ", ".join(DELIVERY_COLUMNS)


async def insert(values: Mapping[str, Any]) -> None:
    await Credential.raw(
        f"INSERT INTO webhook ({_WEBHOOK}) VALUES ({', '.join('{}' for _ in WEBHOOK_COLUMNS)})",
        *(values.get(name) for name in WEBHOOK_COLUMNS),
    )


async def get(workspace_id: str, webhook_id: uuid.UUID) -> dict[str, Any] | None:
    rows = await Credential.raw(
        f"SELECT {_WEBHOOK} FROM webhook WHERE id = {{}} AND workspace_id = {{}}", webhook_id, workspace_id
    )
    return rows[0] if rows else None


async def of_workspace(workspace_id: str) -> list[dict[str, Any]]:
    return list(
        await Credential.raw(
            f"SELECT {_WEBHOOK} FROM webhook WHERE workspace_id = {{}} ORDER BY created_at DESC, id DESC",
            workspace_id,
        )
    )


async def remove(workspace_id: str, webhook_id: uuid.UUID) -> bool:
    """Delete a subscription and its deliveries; False when there was none."""
    rows = await Credential.raw(
        "DELETE FROM webhook WHERE id = {} AND workspace_id = {} RETURNING id", webhook_id, workspace_id
    )
    return bool(rows)


async def rotate(
    workspace_id: str, webhook_id: uuid.UUID, new_ciphertext: str, grace_until: datetime, when: datetime
) -> bool:
    """The current secret becomes the previous one (still signing until ``grace_until``)."""
    rows = await Credential.raw(
        "UPDATE webhook SET previous_secret_ciphertext = secret_ciphertext, previous_valid_until = {}, "
        "secret_ciphertext = {}, updated_at = {} WHERE id = {} AND workspace_id = {} RETURNING id",
        grace_until,
        new_ciphertext,
        when,
        webhook_id,
        workspace_id,
    )
    return bool(rows)


# -- deliveries --------------------------------------------------------------------------------------------------


async def deliveries(workspace_id: str, webhook_id: uuid.UUID, *, skip: int, limit: int) -> list[dict[str, Any]]:
    return list(
        await Credential.raw(
            f"SELECT {_DELIVERY} FROM webhook_delivery d JOIN event e ON e.id = d.event_id "
            "WHERE d.webhook_id = {} AND d.workspace_id = {} ORDER BY d.created_at DESC, d.id DESC "
            "OFFSET {} LIMIT {}",
            webhook_id,
            workspace_id,
            skip,
            limit,
        )
    )


async def retry(workspace_id: str, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    """Queue a delivery again now, with a new retry window; False when there is no such delivery."""
    rows = await Credential.raw(
        "UPDATE webhook_delivery SET status = 'pending', window_start = now(), next_attempt_at = now(), "
        "lease_until = NULL WHERE id = {} AND webhook_id = {} AND workspace_id = {} RETURNING id",
        delivery_id,
        webhook_id,
        workspace_id,
    )
    return bool(rows)


async def claim(limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due deliveries of active subscriptions (skipping rows another instance is claiming),
    with what sending them needs."""
    return list(
        await Credential.raw(
            "UPDATE webhook_delivery d SET lease_until = now() + make_interval(secs => {}), attempts = d.attempts + 1, "
            "last_attempt_at = now() "
            "FROM (SELECT c.id FROM webhook_delivery c "
            "JOIN webhook cw ON cw.id = c.webhook_id AND cw.status = 'active' "
            "WHERE c.status = 'pending' AND c.next_attempt_at <= now() "
            "AND (c.lease_until IS NULL OR c.lease_until < now()) "
            "ORDER BY c.next_attempt_at LIMIT {} FOR UPDATE OF c SKIP LOCKED) AS claimed, event e, webhook w "
            "WHERE d.id = claimed.id AND e.id = d.event_id AND w.id = d.webhook_id "
            "RETURNING d.id, d.attempts, d.window_start, d.workspace_id, d.webhook_id, e.id AS event_id, e.type, "
            "e.payload::text AS payload, e.created_at AS event_created_at, w.url, w.secret_ciphertext, "
            "w.previous_secret_ciphertext, w.previous_valid_until",
            lease_seconds,
            limit,
        )
    )


async def delivered(delivery_id: uuid.UUID, webhook_id: uuid.UUID, status_code: int) -> None:
    await Credential.raw(
        "WITH d AS (UPDATE webhook_delivery SET status = 'delivered', delivered_at = now(), lease_until = NULL, "
        "last_status_code = {}, last_error = NULL WHERE id = {} RETURNING webhook_id) "
        "UPDATE webhook SET failing_since = NULL WHERE id = {} AND failing_since IS NOT NULL",
        status_code,
        delivery_id,
        webhook_id,
    )


async def attempt_failed(
    delivery_id: uuid.UUID, status_code: int | None, error: str, retry_at: datetime | None
) -> None:
    """Record a failed attempt: retried at ``retry_at``, or given up (``failed``) when None."""
    await Credential.raw(
        "UPDATE webhook_delivery SET status = {}, next_attempt_at = COALESCE({}, next_attempt_at), "
        "lease_until = NULL, last_status_code = {}, last_error = {} WHERE id = {}",
        "pending" if retry_at is not None else "failed",
        retry_at,
        status_code,
        error[:255],
        delivery_id,
    )


async def endpoint_failing(webhook_id: uuid.UUID, disable_before: datetime, reason: str) -> dict[str, Any] | None:
    """Note that the endpoint fails (since the first failure); disable it when it has failed since before
    ``disable_before``. Returns the row when this call disabled it (exactly one caller sees that)."""
    rows = await Credential.raw(
        "UPDATE webhook SET failing_since = COALESCE(failing_since, now()), "
        "status = CASE WHEN failing_since < {} THEN 'disabled' ELSE status END, "
        "status_reason = CASE WHEN failing_since < {} THEN {} ELSE status_reason END, updated_at = now() "
        "WHERE id = {} AND status = 'active' RETURNING id, workspace_id, url, status",
        disable_before,
        disable_before,
        reason,
        webhook_id,
    )
    return rows[0] if rows and rows[0]["status"] == "disabled" else None


async def counts(workspace_id: str) -> dict[str, int]:
    """Deliveries of a workspace by status (tests and support)."""
    rows = await Credential.raw(
        "SELECT status, count(*) AS n FROM webhook_delivery WHERE workspace_id = {} GROUP BY status", workspace_id
    )
    return {str(row["status"]): int(row["n"]) for row in rows}
