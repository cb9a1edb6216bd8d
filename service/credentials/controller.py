"""HTTP handlers for ``/api/v1/credentials``: each hands the request context and the decoded body to
``CredentialService`` and answers its result.

Mielto's published operations (create, list, update) keep their exact shapes; get, delete and reveal follow them;
versions, status changes, restore and the auth-type schemas are additions, documented as such. Operation ids are
FastAPI's (``service.openapi.operation_id``, from the handler's name and path); a handler's docstring is its
description in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from service.auth.principal import Permission
from service.context import Ctx
from service.credentials import secrets
from service.credentials.idempotency import HEADER, KEY_PATTERN
from service.credentials.model import Credential
from service.credentials.schemas import (
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
    StatusChange,
)
from service.credentials.service import CredentialService, ListQuery
from service.openapi import SECURITY, errors, needs
from service.paging import check_skip
from service.schemas import NO_NUL

Service = NamedDependency[CredentialService]
IF_MATCH_MAX = 128
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 100, 1000
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Addition: the ETag of the credential as last read; a PUT that no longer matches answers 412",
        required=False,
        max_length=IF_MATCH_MAX,
    ),
]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name=HEADER,
        description=(
            "Addition: makes a retry safe. The same key with the same request within 24 h answers the first "
            "response again (with `Idempotent-Replayed: true`) without a second effect; with another request, 422; "
            "while the first is still running, the duplicate waits for it (409 after 10 s). Per workspace and "
            "caller; printable ASCII, at most 255 characters (a UUID fits). Errors are not kept: a retry after one "
            "runs again."
        ),
        required=False,
        min_length=1,
        max_length=255,
        pattern=KEY_PATTERN,
    ),
]
AnyRequest = Request[Any, Any, Any]
ERRORS = errors(401, 403, 404, 422, 503)
USE = {**ERRORS, **errors(409, 410, 502)}
REFRESH = {**ERRORS, **errors(409, 502)}
REPLAY = {**ERRORS, **errors(409, 410)}
NO_STORE = CacheControlHeader(no_store=True)
READ, WRITE = needs(Permission.read), needs(Permission.write)
REVEAL = {**needs(Permission.reveal), "grant": "refuse"}
"""``grant``: a grant token for this credential is recognised here, and refused with 403 (``service.auth.guard``)."""


def action(path: str, **kwargs: Any) -> post:
    """``POST`` that answers 200, as every operation of Mielto's API does (create included)."""
    return post(path, status_code=200, **kwargs)


def with_etag(credential: Credential) -> Response[CredentialRead]:
    """A credential's metadata with its ETag, for optimistic concurrency (``If-Match`` on PUT)."""
    return Response(credential.read(), headers={"ETag": credential.etag})


def _status_change(verb: str, summary: str, description: str) -> Any:
    """The handler of ``POST /credentials/{id}/<action>`` (disable, enable, revoke), with an optional reason."""

    async def change(
        self: Controller,
        credential_id: FromPath[str],
        ctx: Ctx,
        service: Service,
        data: JSONBody[StatusChange | None] = None,
    ) -> Response[CredentialRead]:
        reason = data.reason if data else None
        return with_etag(await service.set_status(ctx, credential_id, verb, reason))

    change.__name__ = f"{verb}_credential"  # its operation id, as FastAPI would name it
    change.__doc__ = description
    path = f"/{{credential_id:str}}/{verb}"
    return action(path, opt=WRITE, summary=summary, responses={**ERRORS, **errors(409)})(change)


class CredentialController(Controller):
    path = "/credentials"
    tags = ["Credentials"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = SECURITY

    @action("/", opt=WRITE, summary="Create Credential", responses={**ERRORS, **errors(409)})
    async def create_credential(
        self,
        data: JSONBody[CredentialCreate],
        ctx: Ctx,
        service: Service,
        request: AnyRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[CredentialRead]:
        """Create a new credential. Addition: `Idempotency-Key` makes a retry safe."""
        bound = ("POST", request.url.path, await request.body())
        return await service.idempotency.run(ctx, idempotency_key, bound, lambda: service.create(ctx, data))

    @get("/", opt=READ, summary="List Credentials", responses=ERRORS)
    async def list_credentials(
        self,
        ctx: Ctx,
        service: Service,
        skip: Annotated[int, QueryParameter(ge=0, description="Number of credentials to skip")] = 0,
        limit: Annotated[
            int, QueryParameter(ge=1, le=LIST_LIMIT_MAX, description="Maximum number of credentials to return")
        ] = LIST_LIMIT_DEFAULT,
        credential_type: Annotated[
            CredentialType | None, QueryParameter(description="Filter by credential type")
        ] = None,
        auth_type: Annotated[AuthType | None, QueryParameter(description="Filter by auth type")] = None,
        status: Annotated[
            str | None,
            QueryParameter(
                max_length=32,
                pattern=NO_NUL,
                description="Filter by status: active, inactive, expired (computed from expires_at), revoked, error",
            ),
        ] = None,
        search: Annotated[
            str | None,
            QueryParameter(
                max_length=255, pattern=NO_NUL, description="Case-insensitive match in label and description"
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=200,
                description="Addition: the next_cursor of the previous page (keyset pagination, beside skip/limit)",
            ),
        ] = None,
    ) -> CredentialList:
        """List credentials with optional filters, newest first. Served from Postgres alone."""
        check_skip(skip)
        query = ListQuery(
            skip=skip,
            limit=limit,
            credential_type=credential_type,
            auth_type=auth_type,
            status=status,
            search=search,
            cursor=cursor,
        )
        return await service.list(ctx, query)

    @get("/auth-types", opt=READ, summary="Auth Type Schemas", responses=ERRORS)
    async def auth_types(self) -> dict[str, Any]:
        """Addition: the fields of each auth type (which are required, which are secret), to render forms."""
        return secrets.describe()

    @get("/{credential_id:str}", opt=READ, summary="Get Credential", responses=ERRORS)
    async def get_credential(
        self,
        credential_id: FromPath[str],
        ctx: Ctx,
        service: Service,
        include: Annotated[
            Literal["masked"] | None, QueryParameter(description="`masked`: add the masked secret")
        ] = None,
    ) -> Response[CredentialRead | CredentialMasked]:
        """Get one credential's metadata (never its secret). Addition: `include=masked` adds the secret with all but
        the last 4 characters of each secret field masked (secrets under 16 characters, and every field of a `custom`
        credential, completely)."""
        if include == "masked":
            credential, masked = await service.get_masked(ctx, credential_id)
            return Response(masked, headers={"ETag": credential.etag, "Cache-Control": "no-store"})
        return with_etag(await service.get(ctx, credential_id))

    @put("/{credential_id:str}", opt=WRITE, summary="Update Credential", responses={**ERRORS, **errors(409, 412)})
    async def update_credential(
        self,
        credential_id: FromPath[str],
        data: JSONBody[CredentialUpdate],
        ctx: Ctx,
        service: Service,
        if_match: IfMatch = None,
    ) -> Response[CredentialRead]:
        """Update a credential. Only the fields sent change; a new `credentials` object becomes a new version of the
        secret in Vault. Addition: `If-Match` with the ETag last read makes it conditional."""
        return with_etag(await service.update(ctx, credential_id, data, if_match))

    @delete("/{credential_id:str}", status_code=200, opt=WRITE, summary="Delete Credential", responses=ERRORS)
    async def delete_credential(self, credential_id: FromPath[str], ctx: Ctx, service: Service) -> CredentialDeleted:
        """Delete a credential: hidden at once; its secret is destroyed in Vault (every version) when the retention
        window ends, or at once when the window is zero. `POST .../restore` brings it back before."""
        await service.delete(ctx, credential_id)
        return CredentialDeleted(id=credential_id, deleted=True)

    @post(
        "/{credential_id:str}/restore",
        status_code=200,
        opt=WRITE,
        summary="Restore Deleted Credential",
        responses=ERRORS,
    )
    async def restore_credential(
        self,
        credential_id: FromPath[str],
        ctx: Ctx,
        service: Service,
        request: AnyRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[CredentialRead]:
        """Addition: undo a delete within the retention window. `Idempotency-Key` makes a retry safe."""
        bound = ("POST", request.url.path, b"")
        return await service.idempotency.run(ctx, idempotency_key, bound, lambda: service.restore(ctx, credential_id))

    @action(
        "/{credential_id:str}/reveal", opt=REVEAL, cache_control=NO_STORE, summary="Reveal Credential", responses=USE
    )
    async def reveal_credential(
        self,
        credential_id: FromPath[str],
        ctx: Ctx,
        service: Service,
        version: Annotated[int | None, QueryParameter(ge=1, description="An older version to reveal")] = None,
    ) -> CredentialSecret:
        """Addition: decrypt and return the credential's secret (`version` for an older one). Needs the `reveal`
        permission; sets `last_used_at`; refused with 409 while disabled, revoked, in error or expired. An OAuth
        credential with a refresh token whose access token has expired (or expires within the refresh skew) is
        refreshed first and the fresh tokens returned; if the token endpoint fails it answers 502, never the stale
        token."""
        return await service.reveal(ctx, credential_id, version)

    @post(
        "/{credential_id:str}/refresh",
        status_code=200,
        opt=WRITE,
        summary="Refresh OAuth Tokens",
        responses={**ERRORS, **errors(409, 502)},
    )
    async def refresh_credential(
        self,
        credential_id: FromPath[str],
        ctx: Ctx,
        service: Service,
        request: AnyRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[CredentialRead]:
        """Addition: refresh the credential's OAuth tokens now with its refresh token (RFC 6749 section 6),
        authenticating as `token_endpoint_auth_method` says. The new access token, the new refresh token when one is
        returned, and `expires_at` from `expires_in` become a new version (reason `refresh`). Answers the metadata,
        never the tokens. At most one refresh per credential runs at a time across all instances; concurrent callers
        share its result. A refusal by the provider (`invalid_grant`, 400, 401) sets status `error` and answers 409
        until the credential is updated; timeouts, connection errors and 5xx are retried, then answer 502 with the
        status unchanged. `Idempotency-Key` makes a retry safe: a repeat answers the first refresh's result."""
        bound = ("POST", request.url.path, b"")
        return await service.idempotency.run(ctx, idempotency_key, bound, lambda: service.refresh(ctx, credential_id))

    @get("/{credential_id:str}/versions", opt=READ, summary="List Credential Versions", responses=ERRORS)
    async def list_versions(
        self,
        credential_id: FromPath[str],
        ctx: Ctx,
        service: Service,
        skip: Annotated[int, QueryParameter(ge=0, description="Number of versions to skip")] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Maximum number of versions to return")] = 100,
    ) -> CredentialVersionList:
        """Addition: the versions of the secret, newest first, a page at a time (who wrote each, whether current or
        destroyed)."""
        check_skip(skip)
        return await service.versions(ctx, credential_id, skip, limit)

    @action(
        "/{credential_id:str}/versions/{version:int}/restore",
        opt=WRITE,
        summary="Restore Credential Version",
        responses=REPLAY,
    )
    async def restore_version(
        self,
        credential_id: FromPath[str],
        version: FromPath[int],
        ctx: Ctx,
        service: Service,
        request: AnyRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[CredentialRead]:
        """Addition: make an older version current again, as a new version. `Idempotency-Key` makes a retry safe."""
        bound = ("POST", request.url.path, b"")
        return await service.idempotency.run(
            ctx, idempotency_key, bound, lambda: service.restore_version(ctx, credential_id, version)
        )

    disable_credential = _status_change(
        "disable", "Disable Credential", "Addition: status `inactive`; reveal is refused until it is enabled again."
    )
    enable_credential = _status_change(
        "enable", "Enable Credential", "Addition: status `active` again after a disable or an error."
    )
    revoke_credential = _status_change(
        "revoke",
        "Revoke Credential",
        "Addition: terminal status `revoked`; every version is destroyed in Vault, the metadata kept.",
    )
