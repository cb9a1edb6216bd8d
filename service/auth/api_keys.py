"""Workspace API keys: ``ck_<lookup>_<secret>``, stored as the SHA-256 of the secret part only.

The lookup part finds the row; the hashes are compared in constant time. The secret is 256 random bits, so a fast
hash is enough: there is nothing to brute-force. An unknown lookup is compared against a dummy hash, so it costs
the same as a wrong secret. Expired, revoked, inactive and unknown keys are one and the same 401.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from db import api_keys, database
from service.auth.identifiers import WORKSPACE_ID_RULE, is_workspace_id
from service.auth.key_cache import MAX_ENTRIES, KeyCache
from service.auth.principal import Permission, Principal
from service.context import request_id as current_request_id
from service.errors import AuthFailure, Unauthorized
from service.events import outbox as events
from service.events.types import ApiKeyData, EventType

KEY_PREFIX = "ck"
INVALID_API_KEY = "Invalid API key"
ACTIVE = "active"

_KEY_FORMAT = re.compile(r"^ck_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: ``key`` is the whole key, which exists nowhere else from now on."""

    key: str
    row: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.row["id"])


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def public_prefix(lookup_id: str) -> str:
    """What identifies a key in listings (``ck_<lookup>``); it cannot be used to call the API."""
    return f"{KEY_PREFIX}_{lookup_id}"


def validate_workspace_id(workspace_id: str) -> str:
    if not is_workspace_id(workspace_id):
        raise ValueError(WORKSPACE_ID_RULE)
    return workspace_id


def default_expiry(creator: Principal, requested: datetime | None, user_key_ttl: int) -> datetime | None:
    """When a key made over the API expires. A user's key outlives the user's membership of the workspace (the
    service learns of memberships only from tokens), so ``CREDENTIALS_USER_API_KEY_TTL`` bounds keys that users
    create without an expiry; keys made by other keys or by ``credctl`` are the operators' to manage."""
    if requested is not None or not creator.is_user or user_key_ttl <= 0:
        return requested
    return datetime.now(UTC) + timedelta(seconds=user_key_ttl)


async def create(
    workspace_id: str,
    permissions: Iterable[str],
    label: str | None = None,
    *,
    expires_at: datetime | None = None,
    status: str = ACTIVE,
    created_by: str = "credctl",
) -> NewApiKey:
    """Store a new key's hash and return the key (``ValueError`` for a bad workspace, permission or expiry)."""
    validate_workspace_id(workspace_id)
    wanted = set(permissions)
    unknown = sorted(wanted - set(Permission))
    if unknown or not wanted:
        raise ValueError(f"permissions must be a non-empty subset of {', '.join(Permission)}; got {unknown or '[]'}")
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= datetime.now(UTC)):
        raise ValueError("expires_at must be a time in the future, with a UTC offset")
    lookup, secret, now = secrets.token_hex(8), secrets.token_urlsafe(32), datetime.now(UTC)
    row = {
        "id": uuid.uuid4(),
        "workspace_id": workspace_id,
        "label": label,
        "lookup_id": lookup,
        "secret_hash": _hash(secret),
        "permissions": [p.value for p in Permission if p in wanted],
        "status": status,
        "expires_at": expires_at,
        "created_at": now,
        "created_by": created_by,
        "updated_at": now,
        "revoked_at": None,
    }
    async with database.transaction():
        await api_keys.insert(row)
        await _event(EventType.api_key_created, row, created_by)
    return NewApiKey(key=f"{KEY_PREFIX}_{lookup}_{secret}", row=row)


async def list_keys(workspace_id: str) -> list[dict[str, Any]]:
    """A workspace's keys that are not revoked, newest first (every one: an operator's listing, not a page)."""
    workspace_id = validate_workspace_id(workspace_id)
    rows, _ = await api_keys.page(workspace_id, skip=0, limit=10_000)
    return rows


async def revoke(key_id: str, workspace_id: str | None = None, actor: str | None = None) -> dict[str, Any] | None:
    """Revoke a key at once (401 from its next request on). None if there is no such unrevoked key (in
    ``workspace_id``, when given)."""
    try:
        kid = uuid.UUID(key_id)
    except ValueError:
        return None
    async with database.transaction():
        row = await api_keys.revoke(kid, workspace_id, datetime.now(UTC))
        if row is not None:
            await _event(EventType.api_key_revoked, row, actor or "credctl")
    return row


async def _event(event_type: EventType, row: dict[str, Any], actor: str) -> None:
    """``api_key.created`` / ``api_key.revoked``, in the transaction of the change (the request id from the request
    being served; ``credctl`` outside one)."""
    await events.emit(
        event_type,
        ApiKeyData(
            workspace_id=row["workspace_id"],
            actor=actor,
            request_id=current_request_id.get() or "credctl",
            occurred_at=events.now(),
            api_key_id=str(row["id"]),
            label=row["label"],
            permissions=list(row["permissions"]),
        ),
    )


async def principal_of(key: str, cache: KeyCache | None = None) -> Principal:
    """The principal a presented key stands for, or 401. With ``cache``, the key's row usually comes from memory
    (``service.auth.key_cache``); the presented secret is hashed and compared in constant time either way."""
    match = _KEY_FORMAT.match(key)
    if match is None:
        row = None
    elif cache is not None:
        row = await cache.lookup(match.group(1))
    else:
        row = await api_keys.by_lookup(match.group(1))
    presented = _hash(match.group(2)) if match else _DUMMY_HASH
    valid = hmac.compare_digest(presented, row["secret_hash"] if row else _DUMMY_HASH) and row is not None
    if not valid or row is None or row["status"] != ACTIVE:
        raise Unauthorized(INVALID_API_KEY, AuthFailure.invalid_api_key)
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        raise Unauthorized(INVALID_API_KEY, AuthFailure.invalid_api_key)
    return _principal(row["id"], row["workspace_id"], tuple(row["permissions"]), row["label"])


@functools.lru_cache(maxsize=MAX_ENTRIES)
def _principal(key_id: uuid.UUID, workspace_id: str, permissions: tuple[str, ...], label: str) -> Principal:
    """The principal of a key's row, built once and kept: it is immutable and holds nothing secret, and building it
    (a frozen dataclass, a set of enums) was a tenth of a cached get's CPU. The row still decides, on every request,
    whether the key authenticates at all."""
    return Principal(
        workspace_id=workspace_id,
        actor_id=str(key_id),
        permissions=frozenset(Permission(p) for p in permissions),
        label=label,
    )
