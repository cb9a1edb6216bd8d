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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request presents to be admitted: the headers this module reads (the first of each, as Litestar's
    ``Headers.get``) and the peer's address. Read once from the ASGI scope, in one pass over its headers: the guard
    and ``service.hot_routes`` both admit from it."""

    authorization: str | None = None
    api_key: str | None = None
    """``X-API-Key``."""
    workspace: str | None = None
    """``X-Workspace-Id``."""
    forwarded_for: str | None = None
    peer: str | None = None

    @classmethod
    def of(cls, scope: Mapping[str, Any]) -> Presented:
        found: dict[str, str] = {}
        for name, value in scope["headers"]:
            field = _READ.get(name)
            if field is not None and field not in found:
                found[field] = value.decode("latin-1")
        client = scope.get("client")
        return cls(peer=client[0] if client else None, **found)

    def credential(self) -> tuple[Literal["api_key", "token"], str] | None:
        """What the caller sent, and which kind of credential it looks like."""
        if self.authorization:
            scheme, _, credentials = self.authorization.partition(" ")
            credentials = credentials.strip()
            if scheme.lower() != "bearer" or not credentials:
                raise Unauthorized(
                    "Invalid authorization header; expected 'Bearer <API key or user token>'",
                    AuthFailure.malformed_header,
                )
            if credentials.startswith(SUPABASE_PREFIX) or _JWT_FORMAT.match(credentials):
                return "token", credentials
            return "api_key", credentials
        return ("api_key", self.api_key) if self.api_key else None


_READ = {
    b"authorization": "authorization",
    b"x-api-key": "api_key",
    b"x-workspace-id": "workspace",
    b"x-forwarded-for": "forwarded_for",
}
"""The headers ``Presented`` keeps (ASGI gives their names in lower case), and its field for each."""


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


async def authenticate(presented: Presented, state: Any, grant_for: str | None = None) -> Principal:
    """``state``: the app's (its token verifier and key cache). ``grant_for``: the credential whose proxy route
    this is; only there is a grant token accepted (elsewhere it is no API key, and answers 401 as one)."""
    sent = presented.credential()
    if sent is None:
        raise Unauthorized(NOT_AUTHENTICATED, AuthFailure.missing)
    kind, credential = sent
    requested = presented.workspace
    if grant_for is not None and kind == "api_key" and credential.startswith(grants.PREFIX):
        principal = await grants.principal_of(credential, grant_for)
        _check_length(requested)
        if requested is not None and not hmac.compare_digest(requested.encode(), principal.workspace_id.encode()):
            raise Forbidden("X-Workspace-Id does not match the grant's workspace")
        return principal
    if kind == "token":
        return _user_principal(credential, requested, state.services.tokens)
    return await _api_key_principal(credential, requested, getattr(state, "key_cache", None))


async def throttled_authenticate(presented: Presented, state: Any, grant_for: str | None = None) -> Principal:
    """``authenticate``, refused with 429 while the caller's address or key prefix has spent its failures, and
    each 401 recorded as a failure (``service.auth.throttle``)."""
    throttle: Throttle | None = getattr(state, "throttle", None)
    if throttle is None:
        return await authenticate(presented, state, grant_for)
    address = throttle.client_address(presented.peer, presented.forwarded_for)
    sent = presented.api_key or (presented.authorization or "").partition(" ")[2].strip()
    prefix = key_prefix(sent)
    throttle.check(address, prefix)
    try:
        return await authenticate(presented, state, grant_for)
    except Unauthorized as exc:
        throttle.failed(exc.reason, address, prefix)
        raise


async def auth_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Runs before the request body or query is parsed: an anonymous caller learns nothing about validation."""
    await admit(connection.scope, handler.opt)


async def admit(scope: Any, opt: Mapping[str, Any]) -> RequestContext:
    """The request's context (kept in its scope's state, where the ``ctx`` dependency finds it), or the error that
    refuses it. A route's ``opt={"permission": ...}`` names what it needs; ``opt={"grant": "use" | "refuse"}``
    whether a grant token for the route's credential is recognised there (the module's docstring): this is the one
    place that decides where a grant may go. Used by the guard and by ``service.hot_routes``."""
    grant_route = opt.get("grant")
    grant_for = scope["path_params"].get("credential_id") if grant_route else None
    principal = await throttled_authenticate(Presented.of(scope), scope["litestar_app"].state, grant_for)
    if principal.grant is not None and grant_route != "use":
        raise Forbidden(GRANT_USE_ONLY)
    permission = opt.get("permission")
    if permission:
        principal.require(Permission(permission))
    state = scope["state"]
    context = state["context"] = RequestContext(request_id=state["request_id"], principal=principal)
    return context
