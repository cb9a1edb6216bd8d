"""Who is calling: workspace API keys (``Authorization: Bearer`` or ``X-API-Key``), resolved to a ``Principal``.

A key reads ``ck_<lookup>_<secret>``. Only the SHA-256 of the secret part is stored; the lookup part finds the
row and the hashes are compared in constant time. The secret is 256 random bits, so a fast hash is enough: there
is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from db.tables import ApiKey
from service.errors import Forbidden, RequestInvalid, Unauthorized

PERMISSIONS = ("read", "write", "reveal")
KEY_PREFIX = "ck"
WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")

_KEY_FORMAT = re.compile(r"^ck_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
# Compared against when the lookup part matches no key, so that an unknown key costs the same as a wrong one.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: the workspace it acts in, its id (``created_by``) and what it may do."""

    workspace_id: str
    actor_id: str
    permissions: frozenset[str]

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"This API key lacks the '{permission}' permission")


@dataclass(frozen=True, slots=True)
class NewApiKey:
    id: str
    key: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_workspace_id(workspace_id: str) -> str:
    if not WORKSPACE_ID.match(workspace_id):
        raise ValueError("a workspace id is 1-255 characters of letters, digits and _ . : - (starting with one)")
    return workspace_id


async def create_api_key(workspace_id: str, permissions: list[str], label: str | None = None) -> NewApiKey:
    """Store a new key's hash and return the key, which exists nowhere else from now on."""
    validate_workspace_id(workspace_id)
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown or not permissions:
        raise ValueError(f"permissions must be a non-empty subset of {', '.join(PERMISSIONS)}; got {unknown or '[]'}")
    lookup = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        workspace_id=workspace_id,
        label=label,
        lookup_id=lookup,
        secret_hash=_hash(secret),
        permissions=sorted(set(permissions)),
    )
    await ApiKey.insert(row)
    return NewApiKey(id=str(row.id), key=f"{KEY_PREFIX}_{lookup}_{secret}")


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized("Invalid authorization header; expected 'Bearer <API key>'")
        return credentials.strip()
    return connection.headers.get("x-api-key")


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    key = _presented_key(connection)
    if not key:
        raise Unauthorized("Not authenticated")
    match = _KEY_FORMAT.match(key)
    row = None
    if match:
        row = await (
            ApiKey.select(
                ApiKey.id, ApiKey.workspace_id, ApiKey.secret_hash, ApiKey.permissions, ApiKey.status, ApiKey.expires_at
            )
            .where(ApiKey.lookup_id == match.group(1))
            .first()
        )
    presented = _hash(match.group(2)) if match else _DUMMY_HASH
    stored = row["secret_hash"] if row else _DUMMY_HASH
    valid = hmac.compare_digest(presented, stored) and row is not None
    if not valid or row is None or row["status"] != "active":
        raise Unauthorized("Invalid API key")
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        raise Unauthorized("Invalid API key")
    principal = Principal(
        workspace_id=row["workspace_id"], actor_id=str(row["id"]), permissions=frozenset(row["permissions"])
    )
    requested = connection.headers.get("x-workspace-id")
    if requested is not None:
        if len(requested) > 255:
            raise RequestInvalid.at(
                ["header", "X-Workspace-Id"], "String should have at most 255 characters", "string_too_long"
            )
        if not hmac.compare_digest(requested.encode(), principal.workspace_id.encode()):
            raise Forbidden("X-Workspace-Id does not match the API key's workspace")
    return principal


async def auth_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Runs before the request body or query is parsed: an anonymous caller learns nothing about validation."""
    principal = await authenticate(connection)
    permission = handler.opt.get("permission")
    if permission:
        principal.require(permission)
    connection.state.principal = principal


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state.principal
    return principal
