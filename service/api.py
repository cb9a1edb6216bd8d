"""HTTP handlers for ``/api/v1/credentials``: decode, authorize, call ``CredentialService``, encode."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post, put
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from service.auth import Principal
from service.credentials import CredentialService, ListQuery
from service.schemas import (
    AuthType,
    CredentialCreate,
    CredentialDeleted,
    CredentialList,
    CredentialRead,
    CredentialSecret,
    CredentialType,
    CredentialUpdate,
    Detail,
    HTTPValidationError,
)

WorkspaceHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Workspace-Id", description="The workspace ID", required=False, max_length=255),
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


class CredentialController(Controller):
    path = "/credentials"
    tags = ["Credentials"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = [{"DualAuthScheme": []}]  # noqa: RUF012
    responses = ERRORS

    @post(
        "/",
        status_code=200,
        opt={"permission": "write"},
        summary="Create Credential",
        description="Create a new credential.",
        operation_id="create_credential_api_v1_credentials_post",
        responses=ERRORS,
        response_description="Successful Response",
    )
    async def create_credential(
        self,
        data: JSONBody[CredentialCreate],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialRead:
        return await credential_service.create(principal, request_id, data)

    @get(
        "/",
        opt={"permission": "read"},
        summary="List Credentials",
        description="List credentials with optional filters, newest first. Served from Postgres alone.",
        operation_id="list_credentials_api_v1_credentials_get",
        responses=ERRORS,
        response_description="Successful Response",
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
        status: Annotated[str | None, QueryParameter(max_length=32, description="Filter by status")] = None,
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
        "/{credential_id:str}",
        opt={"permission": "read"},
        summary="Get Credential",
        description="Get one credential's metadata (never its secret).",
        operation_id="get_credential_api_v1_credentials__credential_id__get",
        responses=ERRORS,
        response_description="Successful Response",
    )
    async def get_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialRead:
        return await credential_service.get(principal, credential_id)

    @put(
        "/{credential_id:str}",
        opt={"permission": "write"},
        summary="Update Credential",
        description=(
            "Update a credential. Only the fields sent change; a new `credentials` object becomes a new "
            "version of the secret in Vault."
        ),
        operation_id="update_credential_api_v1_credentials__credential_id__put",
        responses=ERRORS,
        response_description="Successful Response",
    )
    async def update_credential(
        self,
        credential_id: FromPath[str],
        data: JSONBody[CredentialUpdate],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialRead:
        return await credential_service.update(principal, request_id, credential_id, data)

    @delete(
        "/{credential_id:str}",
        status_code=200,
        opt={"permission": "write"},
        summary="Delete Credential",
        description="Delete a credential: its metadata, and every version of its secret in Vault.",
        operation_id="delete_credential_api_v1_credentials__credential_id__delete",
        responses=ERRORS,
        response_description="Successful Response",
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
        "/{credential_id:str}/reveal",
        status_code=200,
        opt={"permission": "reveal"},
        cache_control=CacheControlHeader(no_store=True),
        summary="Reveal Credential",
        description="Decrypt and return the credential's secret. Needs the `reveal` permission; sets `last_used_at`.",
        operation_id="reveal_credential_api_v1_credentials__credential_id__reveal_post",
        responses=ERRORS,
        response_description="Successful Response",
    )
    async def reveal_credential(
        self,
        credential_id: FromPath[str],
        principal: NamedDependency[Principal],
        credential_service: NamedDependency[CredentialService],
        request_id: NamedDependency[str],
        x_workspace_id: WorkspaceHeader = None,
    ) -> CredentialSecret:
        return await credential_service.reveal(principal, request_id, credential_id)
