"""HTTP handlers for ``/api/v1/api-keys`` (workspace API keys, permission ``admin``) and ``/api/v1/auth/session``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from db.tables import ApiKey
from service.access_schemas import (
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
from service.auth import PERMISSIONS, Principal, create_api_key, public_prefix, revoke_api_key
from service.errors import Forbidden, NotFound, RequestInvalid
from service.schemas import Detail, HTTPValidationError

API_KEY_NOT_FOUND = "API key not found"

WorkspaceHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Workspace-Id", description="The workspace ID", required=False, max_length=255),
]
ERRORS: dict[int, ResponseSpec] = {
    400: ResponseSpec(data_container=Detail, description="A user of several workspaces sent no X-Workspace-Id"),
    401: ResponseSpec(data_container=Detail, description="Missing, invalid, expired or revoked API key or user token"),
    403: ResponseSpec(
        data_container=Detail,
        description="The caller lacks the permission, or X-Workspace-Id names a workspace it does not belong to",
    ),
    422: ResponseSpec(data_container=HTTPValidationError, description="Validation Error"),
    503: ResponseSpec(data_container=Detail, description="Postgres is unavailable; see Retry-After"),
}
KEY_NOT_FOUND = ResponseSpec(
    data_container=Detail, description=API_KEY_NOT_FOUND, examples=[Example(value={"detail": API_KEY_NOT_FOUND})]
)


def to_key_read(row: dict[str, Any]) -> ApiKeyRead:
    return ApiKeyRead(
        id=str(row["id"]),
        key=public_prefix(row["lookup_id"]),
        label=row["label"],
        status=row["status"],
        permissions=list(row["permissions"]),
        expires_at=row["expires_at"],
        workspace_id=row["workspace_id"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_KEY_COLUMNS = [
    ApiKey.id,
    ApiKey.lookup_id,
    ApiKey.label,
    ApiKey.status,
    ApiKey.permissions,
    ApiKey.expires_at,
    ApiKey.workspace_id,
    ApiKey.created_by,
    ApiKey.created_at,
    ApiKey.updated_at,
]


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["API Keys"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = [{"DualAuthScheme": []}]  # noqa: RUF012
    opt = {"permission": "admin"}  # noqa: RUF012

    @post(
        "/",
        status_code=200,
        cache_control=CacheControlHeader(no_store=True),
        summary="Create API Key",
        description=(
            "Create an API key in the caller's workspace. `secret`, the key itself, is in this response only. "
            "The caller may grant only permissions it holds."
        ),
        operation_id="create_api_key_api_v1_api_keys_post",
        responses=ERRORS,
        response_description="Successful Response",
    )
    async def create_key(
        self,
        data: JSONBody[ApiKeyCreate],
        principal: NamedDependency[Principal],
        x_workspace_id: WorkspaceHeader = None,
    ) -> ApiKeyCreated:
        wanted = [permission.value for permission in data.permissions]
        for permission in wanted:
            if permission not in principal.permissions:
                raise Forbidden(f"Cannot grant the '{permission}' permission, which the caller lacks")
        if data.expires_at is not None and data.expires_at <= datetime.now(UTC):
            raise RequestInvalid.at(["body", "expires_at"], "expires_at must be in the future", "value_error")
        new = await create_api_key(
            principal.workspace_id,
            wanted,
            data.label,
            expires_at=data.expires_at,
            status=data.status.value,
            created_by=principal.actor_id,
        )
        read = to_key_read(new.row)
        return ApiKeyCreated(**{name: getattr(read, name) for name in ApiKeyRead.__struct_fields__}, secret=new.key)

    @get(
        "/",
        summary="List API Keys",
        description="The workspace's API keys that are not revoked, newest first (never their secrets).",
        operation_id="list_api_keys_api_v1_api_keys_get",
        responses=ERRORS,
        response_description="Successful Response",
    )
    async def list_keys(
        self,
        principal: NamedDependency[Principal],
        skip: Annotated[int, QueryParameter(ge=0, description="Number of keys to skip")] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Maximum number of keys to return")] = 100,
        x_workspace_id: WorkspaceHeader = None,
    ) -> ApiKeyList:
        where = (ApiKey.workspace_id == principal.workspace_id) & (ApiKey.status != "revoked")
        rows = await (
            ApiKey.select(*_KEY_COLUMNS)
            .where(where)
            .order_by(ApiKey.created_at, ApiKey.id, ascending=False)
            .offset(skip)
            .limit(limit)
        )
        total = await ApiKey.count().where(where)
        return ApiKeyList(api_keys=[to_key_read(row) for row in rows], total=total, page=skip // limit + 1, size=limit)

    @delete(
        "/{key_id:str}",
        status_code=200,
        summary="Revoke API Key",
        description="Revoke an API key at once: from the next request on it answers 401. Answers the revoked key.",
        operation_id="delete_api_key_api_v1_api_keys__key_id__delete",
        responses={**ERRORS, 404: KEY_NOT_FOUND},
        response_description="Successful Response",
    )
    async def revoke_key(
        self, key_id: FromPath[str], principal: NamedDependency[Principal], x_workspace_id: WorkspaceHeader = None
    ) -> ApiKeyRead:
        row = await revoke_api_key(key_id, principal.workspace_id)
        if row is None:
            raise NotFound(API_KEY_NOT_FOUND)
        return to_key_read(row)


@get(
    "/auth/session",
    tags=["Auth"],
    security=[{"DualAuthScheme": []}],
    summary="Get Session",
    description="Who the caller is, the workspace it acts in, and its role and permissions there.",
    operation_id="get_session_api_v1_auth_session_get",
    responses=ERRORS,
    response_description="Successful Response",
)
async def get_session(principal: NamedDependency[Principal], x_workspace_id: WorkspaceHeader = None) -> Session:
    permissions: list[str] = [p for p in PERMISSIONS if p in principal.permissions]
    if principal.is_user:
        return Session(
            user=SessionUser(id=principal.actor_id, email=principal.email, name=principal.name),
            workspace=SessionWorkspace(id=principal.workspace_id),
            workspace_user=SessionWorkspaceUser(
                role=principal.role, is_owner=principal.role == "owner", permissions=permissions, status="active"
            ),
            auth_type="bearer_token",
            auth_provider=principal.provider,
        )
    return Session(
        user=None,
        workspace=SessionWorkspace(id=principal.workspace_id),
        workspace_user=SessionWorkspaceUser(role=None, is_owner=False, permissions=permissions, status="active"),
        auth_type="api_key",
        auth_provider="api_key",
        api_key=SessionApiKey(id=principal.actor_id, label=principal.label),
    )
