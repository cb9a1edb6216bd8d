"""Who is calling, in which workspace, with what rights: Mielto's ``DualAuthScheme``, resolved to a ``Principal``.

Two kinds of caller:

- A workspace API key, ``ck_<lookup>_<secret>``, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Only
  the SHA-256 of the secret part is stored; the lookup part finds the row and the hashes are compared in constant
  time. The secret is 256 random bits, so a fast hash is enough: there is nothing to brute-force. The key's
  workspace is the workspace; ``X-Workspace-Id``, when sent, must name it (403 otherwise).
- A user token (JWT, ``service.identity``), as ``Authorization: Bearer <jwt>`` or Mielto's
  ``Authorization: Bearer supabase_<jwt>``. ``X-Workspace-Id`` picks one of the user's workspaces; it may be left
  out only when the user has exactly one (400 otherwise), and must name one of theirs (403 otherwise). The role
  held there gives the permissions (``service.identity.ROLE_PERMISSIONS``).

Missing, malformed, unknown, expired, revoked or inactive credentials all answer 401 with
``WWW-Authenticate: Bearer``; nothing a caller presented is ever echoed in an error or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from db import queries
from db.tables import ApiKey
from service.errors import Forbidden, RequestInvalid, ServiceError, Unauthorized
from service.identity import ROLE_PERMISSIONS, SUPABASE_PREFIX, TokenVerifier

PERMISSIONS = ("read", "write", "reveal", "admin")
KEY_PREFIX = "ck"
WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")
INVALID_API_KEY = "Invalid API key"

_KEY_FORMAT = re.compile(r"^ck_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_JWT_FORMAT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
# Compared against when the lookup part matches no key, so that an unknown key costs the same as a wrong one.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class WorkspaceRequired(ServiceError):
    """400: a user of several workspaces did not say which one (``X-Workspace-Id``)."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: the workspace it acts in, its id (``created_by``) and what it may do.

    ``actor_id`` is the API key's id or the user's ``sub``.
    """

    workspace_id: str
    actor_id: str
    permissions: frozenset[str]
    kind: Literal["api_key", "user"] = "api_key"
    role: str | None = None
    """The user's role in the workspace (``owner``, ``admin``, ``member``, ``viewer``); None for an API key."""
    provider: str = "api_key"
    """``api_key``, ``jwt``, or ``supabase`` for a token sent with Mielto's ``supabase_`` prefix."""
    label: str | None = None
    email: str | None = None
    name: str | None = None

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @property
    def sees_every_user(self) -> bool:
        """Whether it sees (and may act on) every user's ``user``/``workspace_member`` credentials."""
        return "admin" in self.permissions

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            if self.is_user:
                raise Forbidden(f"The '{self.role}' role lacks the '{permission}' permission")
            raise Forbidden(f"This API key lacks the '{permission}' permission")


@dataclass(frozen=True, slots=True)
class NewApiKey:
    id: str
    key: str
    row: dict[str, Any]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def public_prefix(lookup_id: str) -> str:
    """What identifies a key in listings (``ck_<lookup>``); it cannot be used to call the API."""
    return f"{KEY_PREFIX}_{lookup_id}"


def validate_workspace_id(workspace_id: str) -> str:
    if not WORKSPACE_ID.match(workspace_id):
        raise ValueError("a workspace id is 1-255 characters of letters, digits and _ . : - (starting with one)")
    return workspace_id


async def create_api_key(
    workspace_id: str,
    permissions: list[str],
    label: str | None = None,
    *,
    expires_at: datetime | None = None,
    status: str = "active",
    created_by: str = "credctl",
) -> NewApiKey:
    """Store a new key's hash and return the key, which exists nowhere else from now on."""
    validate_workspace_id(workspace_id)
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown or not permissions:
        raise ValueError(f"permissions must be a non-empty subset of {', '.join(PERMISSIONS)}; got {unknown or '[]'}")
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= datetime.now(UTC)):
        raise ValueError("expires_at must be a time in the future, with a UTC offset")
    lookup = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = ApiKey(
        workspace_id=workspace_id,
        label=label,
        lookup_id=lookup,
        secret_hash=_hash(secret),
        permissions=[p for p in PERMISSIONS if p in permissions],
        status=status,
        expires_at=expires_at,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    await ApiKey.insert(row)
    return NewApiKey(id=str(row.id), key=f"{KEY_PREFIX}_{lookup}_{secret}", row=row.to_dict())


async def revoke_api_key(key_id: str, workspace_id: str | None = None) -> dict[str, Any] | None:
    """Revoke a key at once (it answers 401 from the next request on). None if there is no such unrevoked key
    (in ``workspace_id``, when given). The row stays, so ``created_by`` of its credentials still names it."""
    try:
        kid = uuid.UUID(key_id)
    except ValueError:
        return None
    where = (ApiKey.id == kid) & (ApiKey.status != "revoked")
    if workspace_id is not None:
        where &= ApiKey.workspace_id == workspace_id
    now = datetime.now(UTC)
    rows = await (
        ApiKey.update({ApiKey.status: "revoked", ApiKey.revoked_at: now, ApiKey.updated_at: now})
        .where(where)
        .returning(*ApiKey.all_columns())
    )
    return rows[0] if rows else None


def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[Literal["api_key", "token"], str] | None:
    """What the caller sent, and which kind of credential it looks like."""
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise Unauthorized("Invalid authorization header; expected 'Bearer <API key or user token>'")
        if credentials.startswith(SUPABASE_PREFIX) or _JWT_FORMAT.match(credentials):
            return "token", credentials
        return "api_key", credentials
    key = connection.headers.get("x-api-key")
    return ("api_key", key) if key else None


def _check_length(requested: str | None) -> None:
    """Checked once the caller is known, so that an anonymous caller learns nothing about validation."""
    if requested is not None and len(requested) > 255:
        raise RequestInvalid.at(
            ["header", "X-Workspace-Id"], "String should have at most 255 characters", "string_too_long"
        )


async def _api_key_principal(key: str, requested: str | None) -> Principal:
    match = _KEY_FORMAT.match(key)
    row = None
    if match:
        row = await queries.api_key_by_lookup(match.group(1))
    presented = _hash(match.group(2)) if match else _DUMMY_HASH
    stored = row["secret_hash"] if row else _DUMMY_HASH
    valid = hmac.compare_digest(presented, stored) and row is not None
    if not valid or row is None or row["status"] != "active":
        raise Unauthorized(INVALID_API_KEY)
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        raise Unauthorized(INVALID_API_KEY)
    _check_length(requested)
    if requested is not None and not hmac.compare_digest(requested.encode(), row["workspace_id"].encode()):
        raise Forbidden("X-Workspace-Id does not match the API key's workspace")
    return Principal(
        workspace_id=row["workspace_id"],
        actor_id=str(row["id"]),
        permissions=frozenset(row["permissions"]),
        label=row["label"],
    )


def _user_principal(token: str, requested: str | None, verifier: TokenVerifier | None) -> Principal:
    supabase = token.startswith(SUPABASE_PREFIX)
    if supabase:
        token = token.removeprefix(SUPABASE_PREFIX)
    if verifier is None:
        raise Unauthorized("User tokens are not accepted by this service")
    user = verifier.verify(token)
    _check_length(requested)
    if requested is None:
        if len(user.workspaces) > 1:
            raise WorkspaceRequired("X-Workspace-Id is required: the user belongs to several workspaces")
        if not user.workspaces:
            raise Forbidden("The user is not a member of any workspace")
        requested = next(iter(user.workspaces))
    role = user.workspaces.get(requested)
    if role is None:
        raise Forbidden("The user is not a member of the workspace named by X-Workspace-Id")
    return Principal(
        workspace_id=requested,
        actor_id=user.id,
        permissions=ROLE_PERMISSIONS[role],
        kind="user",
        role=role,
        provider="supabase" if supabase else "jwt",
        email=user.email,
        name=user.name,
    )


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    presented = _presented(connection)
    if presented is None:
        raise Unauthorized("Not authenticated")
    kind, credential = presented
    requested = connection.headers.get("x-workspace-id")
    if kind == "token":
        verifier: TokenVerifier | None = getattr(connection.app.state, "token_verifier", None)
        return _user_principal(credential, requested, verifier)
    return await _api_key_principal(credential, requested)


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
