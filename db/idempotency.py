"""All SQL on the ``idempotency_key`` table: one row per (workspace, principal, Idempotency-Key).

A row is claimed before the operation runs (``response`` NULL) and completed with the response after it, so a
duplicate arriving meanwhile (on any instance) finds the claim and waits for the response instead of running the
operation again. The row holds the request's fingerprint (a keyed hash made by Vault, never the body) and the
response, which is credential metadata only: no secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from db.tables import Credential


async def claim(
    workspace_id: str,
    principal: str,
    key: str,
    fingerprint: str,
    now: datetime,
    expired_before: datetime,
    stale_before: datetime,
) -> bool:
    """Claim ``key`` for a request: True when this caller must run the operation.

    A new key is claimed; so is one whose row expired (older than ``expired_before``) or whose claim was never
    completed and is older than ``stale_before`` (its owner died). Otherwise the row is someone else's.
    """
    rows = await Credential.raw(
        "INSERT INTO idempotency_key (workspace_id, principal, key, fingerprint, created_at) "
        "VALUES ({}, {}, {}, {}, {}) "
        "ON CONFLICT (workspace_id, principal, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "created_at = EXCLUDED.created_at, status_code = NULL, response = NULL, etag = NULL "
        "WHERE idempotency_key.created_at < {} "
        "OR (idempotency_key.status_code IS NULL AND idempotency_key.created_at < {}) "
        "RETURNING 1 AS claimed",
        workspace_id,
        principal,
        key,
        fingerprint,
        now,
        expired_before,
        stale_before,
    )
    return bool(rows)


async def find(workspace_id: str, principal: str, key: str) -> dict[str, Any] | None:
    """The row of a key: its fingerprint, and its response once completed (``status_code`` NULL until then)."""
    rows = await Credential.raw(
        "SELECT fingerprint, status_code, response, etag, created_at FROM idempotency_key "
        "WHERE workspace_id = {} AND principal = {} AND key = {}",
        workspace_id,
        principal,
        key,
    )
    return rows[0] if rows else None


async def complete(
    workspace_id: str, principal: str, key: str, status_code: int, response: str, etag: str | None
) -> None:
    """Record the response of a claimed key."""
    await Credential.raw(
        "UPDATE idempotency_key SET status_code = {}, response = {}, etag = {} "
        "WHERE workspace_id = {} AND principal = {} AND key = {}",
        status_code,
        response,
        etag,
        workspace_id,
        principal,
        key,
    )


async def release(workspace_id: str, principal: str, key: str) -> None:
    """Give a claim up (the operation failed): a retry with the same key runs it again."""
    await Credential.raw(
        "DELETE FROM idempotency_key WHERE workspace_id = {} AND principal = {} AND key = {} AND status_code IS NULL",
        workspace_id,
        principal,
        key,
    )


async def purge(expired_before: datetime) -> int:
    """Remove rows older than ``expired_before``; returns how many."""
    rows = await Credential.raw(
        "WITH gone AS (DELETE FROM idempotency_key WHERE created_at < {} RETURNING 1) SELECT count(*) AS n FROM gone",
        expired_before,
    )
    return int(rows[0]["n"])
