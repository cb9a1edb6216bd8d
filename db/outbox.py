"""All SQL on the ``event`` table (the transactional outbox): an event and its deliveries are written in one
statement, inside the caller's transaction, so they commit or roll back with the change they report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.tables import Credential


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event as the ``event`` table stores it, its payload already JSON."""

    id: uuid.UUID
    workspace_id: str
    type: str
    credential_id: uuid.UUID | None
    payload: str
    created_at: datetime
    from_row: tuple[str, ...] = ()
    """Fields of the payload's ``data`` that the statement recording it takes from the row it changed (``recording``):
    the columns of that name."""

    def args(self) -> tuple[Any, ...]:
        """The parameters of ``recording``'s SQL, in its order."""
        return (self.id, self.workspace_id, self.type, self.credential_id, self.payload, self.created_at)


def recording(source: str, event: EventRow) -> str:
    """Two CTEs of a statement (its ``WITH`` list): ``e``, the event, inserted once if the CTE ``source`` yields a
    row and not at all if it yields none (so a change that matched nothing reports nothing), and ``d``, one delivery
    per active subscription of its workspace that wants its type. Parameters: ``event.args()``. With
    ``event.from_row``, those fields of the payload's ``data`` come from the row ``source`` yields."""
    payload = "{}::jsonb"
    created_at = "{}"
    if event.from_row:
        payload = f"jsonb_set(p.payload, ARRAY['data'], (p.payload -> 'data') || {_fields_of_s(event.from_row)})"
        created_at = "p.created_at"
    source_rows = (
        f"{source} AS s, LATERAL (SELECT {{}}::jsonb AS payload, {{}}::timestamptz AS created_at) AS p"
        if event.from_row
        else f"{source} AS s"
    )
    return (
        "e AS (INSERT INTO event (id, workspace_id, type, credential_id, payload, created_at) "
        f"SELECT {{}}, {{}}, {{}}, {{}}, {payload}, {created_at} FROM {source_rows} LIMIT 1 "
        f"RETURNING id, workspace_id, type, created_at), {_DELIVERIES}"
    )


def recording_each(source: str, from_row: tuple[str, ...]) -> str:
    """``recording``'s two CTEs for many events at once: one per row the CTE ``source`` yields, which carries the
    event's own ``event_id``, ``workspace_id``, ``type``, ``payload`` (JSON text) and ``created_at``, the
    credential's ``id``, and the ``from_row`` columns added to the payload's data. No parameters."""
    payload = f"jsonb_set(s.payload::jsonb, ARRAY['data'], (s.payload::jsonb -> 'data') || {_fields_of_s(from_row)})"
    return (
        "e AS (INSERT INTO event (id, workspace_id, type, credential_id, payload, created_at) "
        f"SELECT s.event_id, s.workspace_id, s.type, s.id, {payload}, s.created_at FROM {source} AS s "
        f"RETURNING id, workspace_id, type, created_at), {_DELIVERIES}"
    )


_DELIVERIES = (
    "d AS (INSERT INTO webhook_delivery (id, webhook_id, event_id, workspace_id, window_start, next_attempt_at, "
    "created_at) SELECT gen_random_uuid(), w.id, e.id, e.workspace_id, e.created_at, e.created_at, e.created_at "
    "FROM e JOIN webhook w ON w.workspace_id = e.workspace_id AND w.status = 'active' "
    "AND e.type = ANY(w.event_types))"
)
"""The CTE ``d``: one delivery of each event of ``e`` per active subscription of its workspace that wants its type."""


def _fields_of_s(names: tuple[str, ...]) -> str:
    """A JSON object of the columns ``names`` of the row ``s``, each under its own name."""
    if not all(name.isidentifier() for name in names):
        raise ValueError(f"not column names: {names}")
    return "jsonb_build_object(" + ", ".join(f"'{name}', s.{name}" for name in names) + ")"


# The event, then one delivery per active subscription of its workspace that wants its type: one round trip.
async def emit(event: EventRow, *, only_webhook: uuid.UUID | None = None) -> None:
    """Record an event and queue it for the subscriptions that want it (only ``only_webhook``, whatever it
    subscribed to, when given: the test ping)."""
    if only_webhook is None:
        await Credential.raw(f"WITH always AS (SELECT 1), {recording('always', event)} SELECT 1", *event.args())
        return
    await Credential.raw(
        "WITH e AS (INSERT INTO event (id, workspace_id, type, credential_id, payload, created_at) "
        "VALUES ({}, {}, {}, {}, {}::jsonb, {}) RETURNING id, workspace_id, created_at) "
        "INSERT INTO webhook_delivery (id, webhook_id, event_id, workspace_id, window_start, next_attempt_at, "
        "created_at) SELECT gen_random_uuid(), {}, e.id, e.workspace_id, e.created_at, e.created_at, e.created_at "
        "FROM e",
        *event.args(),
        only_webhook,
    )


async def last_of(credential_id: uuid.UUID, types: list[str]) -> str | None:
    """The type of the latest of ``types`` recorded for a credential, or None."""
    rows = await Credential.raw(
        "SELECT type FROM event WHERE credential_id = {} AND type = ANY({}) ORDER BY created_at DESC LIMIT 1",
        credential_id,
        types,
    )
    return str(rows[0]["type"]) if rows else None


async def of_workspace(workspace_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """A workspace's events, oldest first (tests and support)."""
    return list(
        await Credential.raw(
            "SELECT id, type, credential_id, payload, created_at FROM event WHERE workspace_id = {} "
            "ORDER BY created_at LIMIT {}",
            workspace_id,
            limit,
        )
    )


async def prune(before: datetime) -> int:
    """Forget events older than ``before`` that no delivery still waits for; how many went."""
    rows = await Credential.raw(
        "DELETE FROM event e WHERE e.created_at < {} AND NOT EXISTS "
        "(SELECT 1 FROM webhook_delivery d WHERE d.event_id = e.id AND d.status = 'pending') RETURNING 1",
        before,
    )
    return len(rows)


async def consecutive_failures(credential_id: uuid.UUID, failed_type: str, recovered_type: str) -> int:
    """How many ``failed_type`` events a credential has had since its last ``recovered_type`` one."""
    rows = await Credential.raw(
        "SELECT count(*) AS n FROM event WHERE credential_id = {} AND type = {} AND created_at > "
        "COALESCE((SELECT max(created_at) FROM event WHERE credential_id = {} AND type = {}), '-infinity')",
        credential_id,
        failed_type,
        credential_id,
        recovered_type,
    )
    return int(rows[0]["n"])
