"""HTTP handlers for ``/api/v1/api-keys`` (workspace API keys, permission ``admin``) and ``/api/v1/auth/session``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, JSONBody, QueryParameter

from db import api_keys as rows
from service.access.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    Session,
    SessionApiKey,
    SessionUser,
    SessionWorkspace,
    SessionWorkspaceUser,
)
from service.auth import api_keys
from service.auth.principal import Permission, Role
from service.context import Ctx
from service.errors import Forbidden, NotFound, RequestInvalid
from service.openapi import SECURITY, errors, needs
from service.paging import check_skip

KEY_NOT_FOUND = "API key not found"
NO_STORE = CacheControlHeader(no_store=True)
ERRORS = errors(400, 401, 403, 422, 503)


def to_key_read(row: dict[str, Any]) -> ApiKeyRead:
    return ApiKeyRead(
        id=str(row["id"]),
        key=api_keys.public_prefix(row["lookup_id"]),
        label=row["label"],
        status=row["status"],
        permissions=list(row["permissions"]),
        expires_at=row["expires_at"],
        workspace_id=row["workspace_id"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["API Keys"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = SECURITY
    opt = needs(Permission.admin)

    @post("/", status_code=200, cache_control=NO_STORE, summary="Create API Key", responses=ERRORS)
    async def create_api_key(
        self, data: JSONBody[ApiKeyCreate], ctx: Ctx, request: Request[Any, Any, Any]
    ) -> ApiKeyCreated:
        """Create an API key in the caller's workspace. `secret`, the key itself, is in this response only. The caller
        may grant only permissions it holds."""
        principal = ctx.principal
        for permission in data.permissions:
            if permission not in principal.permissions:
                raise Forbidden(f"Cannot grant the '{permission}' permission, which the caller lacks")
        if data.expires_at is not None and data.expires_at <= datetime.now(UTC):
            raise RequestInvalid.at(["body", "expires_at"], "expires_at must be in the future", "value_error")
        new = await api_keys.create(
            principal.workspace_id,
            data.permissions,
            data.label,
            expires_at=api_keys.default_expiry(
                principal, data.expires_at, request.app.state.settings.hardening.user_api_key_ttl_seconds
            ),
            status=data.status.value,
            created_by=principal.actor_id,
        )
        read = to_key_read(new.row)
        return ApiKeyCreated(**{name: getattr(read, name) for name in ApiKeyRead.__struct_fields__}, secret=new.key)

    @get("/", summary="List API Keys", responses=ERRORS)
    async def list_api_keys(
        self,
        ctx: Ctx,
        skip: Annotated[int, QueryParameter(ge=0, description="Number of keys to skip")] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Maximum number of keys to return")] = 100,
    ) -> ApiKeyList:
        """The workspace's API keys that are not revoked, newest first (never their secrets)."""
        check_skip(skip)
        found, total = await rows.page(ctx.workspace_id, skip=skip, limit=limit)
        return ApiKeyList(api_keys=[to_key_read(row) for row in found], total=total, page=skip // limit + 1, size=limit)

    @delete(
        "/{key_id:str}", status_code=200, summary="Revoke API Key", responses={**ERRORS, **errors(e404=KEY_NOT_FOUND)}
    )
    async def delete_api_key(self, key_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any]) -> ApiKeyRead:
        """Revoke an API key at once: from the next request on it answers 401. Answers the revoked key."""
        row = await api_keys.revoke(key_id, ctx.workspace_id, actor=ctx.actor_id)
        # This instance forgets the key before answering; the others hear it through LISTEN/NOTIFY.
        cache = getattr(request.app.state, "key_cache", None)
        if row is not None and cache is not None:
            cache.evict(row["lookup_id"])
        if row is None:
            raise NotFound(KEY_NOT_FOUND)
        return to_key_read(row)


@get("/auth/session", tags=["Auth"], security=SECURITY, summary="Get Session", responses=ERRORS)
async def get_session(ctx: Ctx) -> Session:
    """Who the caller is, the workspace it acts in, and its role and permissions there."""
    principal = ctx.principal
    permissions: list[str] = [p.value for p in Permission if p in principal.permissions]
    workspace = SessionWorkspace(id=principal.workspace_id)
    if principal.is_user:
        return Session(
            user=SessionUser(id=principal.actor_id, email=principal.email, name=principal.name),
            workspace=workspace,
            workspace_user=SessionWorkspaceUser(
                role=principal.role, is_owner=principal.role is Role.owner, permissions=permissions, status="active"
            ),
            auth_type="bearer_token",
            auth_provider=principal.provider,
        )
    return Session(
        user=None,
        workspace=workspace,
        workspace_user=SessionWorkspaceUser(role=None, is_owner=False, permissions=permissions, status="active"),
        auth_type="api_key",
        auth_provider="api_key",
        api_key=SessionApiKey(id=principal.actor_id, label=principal.label),
    )
