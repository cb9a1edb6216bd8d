"""HTTP handlers for ``/api/v1/credentials``: decode, authorize, call ``CredentialService``, encode.

Mielto's published operations (create, list, update) keep their exact shapes; get, delete and reveal follow
them; versions, status changes, restore and the auth-type schemas are additions, documented as such.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from service import secret_types
from service.auth import Principal
from service.credentials import CredentialService, ListQuery, etag, to_read
from service.schemas import (
    AuthType,
    CredentialCreate,
    CredentialDeleted,
    CredentialList,
    CredentialMasked,
    CredentialRead,
    CredentialSecret,
    CredentialType,
    CredentialUpdate,
    CredentialVersionList,
    Detail,
    HTTPValidationError,
    StatusChange,
)

WorkspaceHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Workspace-Id", description="The workspace ID", required=False, max_length=255),
]
IfMatchHeader = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Addition: the ETag of the credential as last read; a PUT that no longer matches answers 412",
        required=False,
        max_length=128,
    ),
]

NOT_FOUND = ResponseSpec(
    data_container=Detail,
    description="Credential not found",
    examples=[Example(value={"detail": "Credential not found"})],
)
ERRORS: dict[int, ResponseSpec] = {
    401: ResponseSpec(data_container=Detail, description="Missing or invalid API key"),
    403: ResponseSpec(
        data_container=Detail, description="The API key lacks the permission, or X-Workspace-Id names another workspace"
    ),
    404: NOT_FOUND,
    422: ResponseSpec(data_container=HTTPValidationError, description="Validation Error"),
    503: ResponseSpec(data_container=Detail, description="Vault or Postgres is unavailable; see Retry-After"),
}
CONFLICT = {409: ResponseSpec(data_container=Detail, description="The credential's status forbids it")}
BAD_GATEWAY = {
    502: ResponseSpec(
        data_container=Detail,
        description="The OAuth token endpoint failed, timed out or is refused by the egress rules; nothing changed",
        examples=[
            Example(value={"detail": "Token refresh failed after 3 attempt(s): the token endpoint answered HTTP 503"})
        ],
    )
}
GONE = {410: ResponseSpec(data_container=Detail, description="That version was destroyed")}
PRECONDITION = {412: ResponseSpec(data_container=Detail, description="If-Match does not match the current ETag")}
OK = "Successful Response"


def with_etag(row: dict[str, Any]) -> Response[CredentialRead]:
    """A credential's metadata with its ETag, for optimistic concurrency (``If-Match`` on PUT)."""
    return Response(to_read(row), headers={"ETag": etag(row)})


class CredentialController(Controller):
    path = "/credentials"
    tags = ["Credentials"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = [{"DualAuthScheme": []}]  # noqa: RUF012

    @post(
        "/",
        status_code=200,
        opt={"permission": "write"},
        summary="Create Credential",
        description="Create a new credential.",
        operation_id="create_credential_api_v1_credentials_post",
        responses=ERRORS,
        response_description=OK,
    )
    async def create_credential(
        self,
        data: JSONBody[CredentialCreate],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return with_etag(await credential_service.create(principal, request_id, data))

    @get(
        "/",
        opt={"permission": "read"},
        summary="List Credentials",
        description="List credentials with optional filters, newest first. Served from Postgres alone.",
        operation_id="list_credentials_api_v1_credentials_get",
        responses=ERRORS,
        response_description=OK,
    )
    async def list_credentials(
        self,
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        skip: Annotated[int, QueryParameter(ge=0, description="Number of credentials to skip")] = 0,
        limit: Annotated[
            int, QueryParameter(ge=1, le=1000, description="Maximum number of credentials to return")
        ] = 100,
        credential_type: Annotated[
            CredentialType | None, QueryParameter(description="Filter by credential type")
        ] = None,
        auth_type: Annotated[AuthType | None, QueryParameter(description="Filter by auth type")] = None,
        status: Annotated[
            str | None,
            QueryParameter(
                max_length=32,
                description="Filter by status: active, inactive, expired (computed from expires_at), revoked, error",
            ),
        ] = None,
        search: Annotated[
            str | None,
            QueryParameter(max_length=255, description="Case-insensitive match in label and description"),
        ] = None,
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialList:
        query = ListQuery(
            skip=skip, limit=limit, credential_type=credential_type, auth_type=auth_type, status=status, search=search
        )
        return await credential_service.list(principal, query)

    @get(
        "/auth-types",
        opt={"permission": "read"},
        summary="Auth Type Schemas",
        description="Addition: the fields of each auth type (which are required, which are secret), to render forms.",
        operation_id="auth_types_api_v1_credentials_auth_types_get",
        responses=ERRORS,
        response_description=OK,
    )
    async def auth_types(self, principal: NamedDependency[Principal]) -> dict[str, Any]:
        return secret_types.describe()

    @get(
        "/{credential_id:str}",
        opt={"permission": "read"},
        summary="Get Credential",
        description=(
            "Get one credential's metadata (never its secret). Addition: `include=masked` adds the secret with all "
            "but the last 4 characters of each secret field masked."
        ),
        operation_id="get_credential_api_v1_credentials__credential_id__get",
        responses=ERRORS,
        response_description=OK,
    )
    async def get_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        include: Annotated[
            Literal["masked"] | None, QueryParameter(description="`masked`: add the masked secret")
        ] = None,
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead | CredentialMasked]:
        if include == "masked":
            row, masked = await credential_service.get_masked(principal, request_id, credential_id)
            return Response(masked, headers={"ETag": etag(row), "Cache-Control": "no-store"})
        return with_etag(await credential_service.get(principal, credential_id))

    @put(
        "/{credential_id:str}",
        opt={"permission": "write"},
        summary="Update Credential",
        description=(
            "Update a credential. Only the fields sent change; a new `credentials` object becomes a new "
            "version of the secret in Vault. Addition: `If-Match` with the ETag last read makes it conditional."
        ),
        operation_id="update_credential_api_v1_credentials__credential_id__put",
        responses={**ERRORS, **CONFLICT, **PRECONDITION},
        response_description=OK,
    )
    async def update_credential(
        self,
        credential_id: FromPath[str],
        data: JSONBody[CredentialUpdate],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
        if_match: IfMatchHeader = None,
    ) -> Response[CredentialRead]:
        return with_etag(await credential_service.update(principal, request_id, credential_id, data, if_match))

    @delete(
        "/{credential_id:str}",
        status_code=200,
        opt={"permission": "write"},
        summary="Delete Credential",
        description=(
            "Delete a credential: hidden at once; its secret is destroyed in Vault (every version) when the "
            "retention window ends, or at once when the window is zero. `POST .../restore` brings it back before."
        ),
        operation_id="delete_credential_api_v1_credentials__credential_id__delete",
        responses=ERRORS,
        response_description=OK,
    )
    async def delete_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialDeleted:
        await credential_service.delete(principal, request_id, credential_id)
        return CredentialDeleted(id=credential_id, deleted=True)

    @post(
        "/{credential_id:str}/restore",
        status_code=200,
        opt={"permission": "write"},
        summary="Restore Deleted Credential",
        description="Addition: undo a delete within the retention window.",
        operation_id="restore_credential_api_v1_credentials__credential_id__restore_post",
        responses=ERRORS,
        response_description=OK,
    )
    async def restore_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return with_etag(await credential_service.restore(principal, credential_id))

    @post(
        "/{credential_id:str}/reveal",
        status_code=200,
        opt={"permission": "reveal"},
        cache_control=CacheControlHeader(no_store=True),
        summary="Reveal Credential",
        description=(
            "Addition: decrypt and return the credential's secret (`version` for an older one). Needs the `reveal` "
            "permission; sets `last_used_at`; refused with 409 while disabled, revoked, in error or expired. An OAuth "
            "credential with a refresh token whose access token has expired (or expires within the refresh skew) is "
            "refreshed first and the fresh tokens returned; if the token endpoint fails it answers 502, never the "
            "stale token."
        ),
        operation_id="reveal_credential_api_v1_credentials__credential_id__reveal_post",
        responses={**ERRORS, **CONFLICT, **GONE, **BAD_GATEWAY},
        response_description=OK,
    )
    async def reveal_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        version: Annotated[int | None, QueryParameter(ge=1, description="An older version to reveal")] = None,
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialSecret:
        return await credential_service.reveal(principal, request_id, credential_id, version)

    @post(
        "/{credential_id:str}/refresh",
        status_code=200,
        opt={"permission": "write"},
        summary="Refresh OAuth Tokens",
        description=(
            "Addition: refresh the credential's OAuth tokens now with its refresh token (RFC 6749 section 6), "
            "authenticating as `token_endpoint_auth_method` says. The new access token, the new refresh token when "
            "one is returned, and `expires_at` from `expires_in` become a new version (reason `refresh`). Answers "
            "the metadata, never the tokens. At most one refresh per credential runs at a time across all "
            "instances; concurrent callers share its result. A refusal by the provider (`invalid_grant`, 400, "
            "401) sets status `error` and answers 409 until the credential is updated; timeouts, connection errors "
            "and 5xx are retried, then answer 502 with the status unchanged."
        ),
        operation_id="refresh_credential_api_v1_credentials__credential_id__refresh_post",
        responses={**ERRORS, **CONFLICT, **BAD_GATEWAY},
        response_description=OK,
    )
    async def refresh_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return with_etag(await credential_service.refresh(principal, request_id, credential_id))

    @get(
        "/{credential_id:str}/versions",
        opt={"permission": "read"},
        summary="List Credential Versions",
        description="Addition: every version of the secret, newest first (who wrote it, whether current or destroyed).",
        operation_id="list_versions_api_v1_credentials__credential_id__versions_get",
        responses=ERRORS,
        response_description=OK,
    )
    async def list_versions(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialVersionList:
        return await credential_service.versions(principal, credential_id)

    @post(
        "/{credential_id:str}/versions/{version:int}/restore",
        status_code=200,
        opt={"permission": "write"},
        summary="Restore Credential Version",
        description="Addition: make an older version current again, as a new version.",
        operation_id="restore_version_api_v1_credentials__credential_id__versions__version__restore_post",
        responses={**ERRORS, **CONFLICT, **GONE},
        response_description=OK,
    )
    async def restore_version(
        self,
        credential_id: FromPath[str],
        version: FromPath[int],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return with_etag(await credential_service.restore_version(principal, request_id, credential_id, version))

    async def _status(
        self,
        action: str,
        credential_id: str,
        data: StatusChange | None,
        principal: Principal,
        credential_service: CredentialService,
        request_id: str,
    ) -> Response[CredentialRead]:
        reason = data.reason if data else None
        return with_etag(await credential_service.set_status(principal, request_id, credential_id, action, reason))

    @post(
        "/{credential_id:str}/disable",
        status_code=200,
        opt={"permission": "write"},
        summary="Disable Credential",
        description="Addition: status `inactive`; reveal is refused until it is enabled again.",
        operation_id="disable_credential_api_v1_credentials__credential_id__disable_post",
        responses={**ERRORS, **CONFLICT},
        response_description=OK,
    )
    async def disable_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        data: JSONBody[StatusChange | None] = None,
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return await self._status("disable", credential_id, data, principal, credential_service, request_id)

    @post(
        "/{credential_id:str}/enable",
        status_code=200,
        opt={"permission": "write"},
        summary="Enable Credential",
        description="Addition: status `active` again after a disable or an error.",
        operation_id="enable_credential_api_v1_credentials__credential_id__enable_post",
        responses={**ERRORS, **CONFLICT},
        response_description=OK,
    )
    async def enable_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        data: JSONBody[StatusChange | None] = None,
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return await self._status("enable", credential_id, data, principal, credential_service, request_id)

    @post(
        "/{credential_id:str}/revoke",
        status_code=200,
        opt={"permission": "write"},
        summary="Revoke Credential",
        description="Addition: terminal status `revoked`; every version is destroyed in Vault, the metadata kept.",
        operation_id="revoke_credential_api_v1_credentials__credential_id__revoke_post",
        responses={**ERRORS, **CONFLICT},
        response_description=OK,
    )
    async def revoke_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        data: JSONBody[StatusChange | None] = None,
        x_workspace_id: WorkspaceHeader = None,
    ) -> Response[CredentialRead]:
        return await self._status("revoke", credential_id, data, principal, credential_service, request_id)
