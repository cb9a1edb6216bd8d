"""Mielto's ``DualAuthScheme``: every ``/api/v1`` request is resolved to a principal before its body is read.

- A workspace API key (``service.auth.api_keys``), as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The
  key's workspace is the workspace; ``X-Workspace-Id``, when sent, must name it (403 otherwise).
- A user token (``service.auth.tokens``), as ``Authorization: Bearer <jwt>`` or Mielto's ``Authorization: Bearer
  supabase_<jwt>``. ``X-Workspace-Id`` picks one of the user's workspaces; it may be left out only when the user has
  exactly one (400 otherwise), and must name one of theirs (403 otherwise). The role there gives the permissions.

- A grant token (``service.grants``), as ``Authorization: Bearer cg_...``, on the routes of one credential that name
  it in ``opt["grant"]``: ``"use"`` (the proxy), where it authenticates, and ``"refuse"`` (reveal), where a grant for
  *that* credential answers 403: it may use the secret, never see it. Anywhere else, and on another credential's
  routes, it authenticates nothing (401).

Missing, malformed, unknown, expired, revoked or inactive credentials all answer 401 with ``WWW-Authenticate:
Bearer``; nothing a caller presented is ever echoed in an error or a log line.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.auth import api_keys
from service.auth.identifiers import WORKSPACE_ID_RULE, is_workspace_id
from service.auth.key_cache import KeyCache
from service.auth.principal import ROLE_PERMISSIONS, Permission, Principal
from service.auth.throttle import Throttle, key_prefix
from service.auth.tokens import SUPABASE_PREFIX, TokenVerifier
from service.context import RequestContext
from service.errors import AuthFailure, BadRequest, Forbidden, RequestInvalid, Unauthorized
from service.grants import service as grants

NOT_AUTHENTICATED = "Not authenticated"
TOKENS_NOT_ACCEPTED = "User tokens are not accepted by this service"
GRANT_USE_ONLY = "A grant permits use of its credential through the proxy only; it cannot reveal the secret"
_JWT_FORMAT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[Literal["api_key", "token"], str] | None:
    """What the caller sent, and which kind of credential it looks like."""
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise Unauthorized(
                "Invalid authorization header; expected 'Bearer <API key or user token>'", AuthFailure.malformed_header
            )
        if credentials.startswith(SUPABASE_PREFIX) or _JWT_FORMAT.match(credentials):
            return "token", credentials
        return "api_key", credentials
    key = connection.headers.get("x-api-key")
    return ("api_key", key) if key else None


def _check_length(requested: str | None) -> None:
    """Checked once the caller is known, so that an anonymous caller learns nothing about validation. The same
    workspace-id rule as API keys' and tokens' workspaces (``service.auth.identifiers``)."""
    if requested is None:
        return
    if len(requested) > 255:
        raise RequestInvalid.at(
            ["header", "X-Workspace-Id"], "String should have at most 255 characters", "string_too_long"
        )
    if not is_workspace_id(requested):
        raise RequestInvalid.at(["header", "X-Workspace-Id"], WORKSPACE_ID_RULE, "string_pattern_mismatch")


async def _api_key_principal(key: str, requested: str | None, cache: KeyCache | None) -> Principal:
    principal = await api_keys.principal_of(key, cache)
    _check_length(requested)
    if requested is not None and not hmac.compare_digest(requested.encode(), principal.workspace_id.encode()):
        raise Forbidden("X-Workspace-Id does not match the API key's workspace")
    return principal


def _user_principal(token: str, requested: str | None, verifier: TokenVerifier | None) -> Principal:
    supabase = token.startswith(SUPABASE_PREFIX)
    if supabase:
        token = token.removeprefix(SUPABASE_PREFIX)
    if verifier is None:
        raise Unauthorized(TOKENS_NOT_ACCEPTED, AuthFailure.user_tokens_off)
    user = verifier.verify(token)
    _check_length(requested)
    if requested is None:
        if len(user.workspaces) > 1:
            raise BadRequest("X-Workspace-Id is required: the user belongs to several workspaces")
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


async def authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], verifier: TokenVerifier | None, grant_for: str | None = None
) -> Principal:
    """``grant_for``: the credential whose proxy route this is; only there is a grant token accepted (elsewhere it
    is no API key, and answers 401 as one)."""
    presented = _presented(connection)
    if presented is None:
        raise Unauthorized(NOT_AUTHENTICATED, AuthFailure.missing)
    kind, credential = presented
    requested = connection.headers.get("x-workspace-id")
    if grant_for is not None and kind == "api_key" and credential.startswith(grants.PREFIX):
        principal = await grants.principal_of(credential, grant_for)
        _check_length(requested)
        if requested is not None and not hmac.compare_digest(requested.encode(), principal.workspace_id.encode()):
            raise Forbidden("X-Workspace-Id does not match the grant's workspace")
        return principal
    if kind == "token":
        return _user_principal(credential, requested, verifier)
    return await _api_key_principal(credential, requested, getattr(connection.app.state, "key_cache", None))


async def throttled_authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], grant_for: str | None = None
) -> Principal:
    """``authenticate``, refused with 429 while the caller's address or key prefix has spent its failures, and
    each 401 recorded as a failure (``service.auth.throttle``)."""
    verifier = connection.app.state.services.tokens
    throttle: Throttle | None = getattr(connection.app.state, "throttle", None)
    if throttle is None:
        return await authenticate(connection, verifier, grant_for)
    address = throttle.client_address(
        connection.client.host if connection.client else None, connection.headers.get("x-forwarded-for")
    )
    authorization = connection.headers.get("authorization", "")
    prefix = key_prefix(connection.headers.get("x-api-key") or authorization.partition(" ")[2].strip())
    throttle.check(address, prefix)
    try:
        return await authenticate(connection, verifier, grant_for)
    except Unauthorized as exc:
        throttle.failed(exc.reason, address, prefix)
        raise


async def auth_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Runs before the request body or query is parsed: an anonymous caller learns nothing about validation."""
    await admit(connection, handler.opt)


async def admit(connection: ASGIConnection[Any, Any, Any, Any], opt: Mapping[str, Any]) -> RequestContext:
    """The request's context, or the error that refuses it. A route's ``opt={"permission": ...}`` names what it
    needs; ``opt={"grant": "use" | "refuse"}`` whether a grant token for the route's credential is recognised there
    (the module's docstring): this is the one place that decides where a grant may go. Used by the guard and by
    ``service.hot_routes``."""
    grant_route = opt.get("grant")
    grant_for = connection.path_params.get("credential_id") if grant_route else None
    principal = await throttled_authenticate(connection, grant_for)
    if principal.grant is not None and grant_route != "use":
        raise Forbidden(GRANT_USE_ONLY)
    permission = opt.get("permission")
    if permission:
        principal.require(Permission(permission))
    context = RequestContext(request_id=connection.scope["state"]["request_id"], principal=principal)
    connection.state.context = context
    return context
