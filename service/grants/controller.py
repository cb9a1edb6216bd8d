"""HTTP handlers for a credential's grants, its usage record and its provider check (``/credentials/{id}/...``)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from service.auth.principal import Permission
from service.context import Ctx
from service.credentials.service import CredentialService
from service.grants.schemas import CheckResult, GrantCreate, GrantCreated, GrantList, GrantRead, UsageList
from service.grants.service import GrantService
from service.openapi import SECURITY, errors, needs
from service.paging import MAX_SKIP
from service.proxy import usage
from service.proxy.check import CheckService
from service.proxy.service import ProxyService

Service = NamedDependency[CredentialService]
Grants = NamedDependency[GrantService]
Checks = NamedDependency[CheckService]
Proxy = NamedDependency[ProxyService]
ERRORS = errors(401, 403, 404, 422, 503)
USE, READ = needs(Permission.use), needs(Permission.read)
Skip = Annotated[int, QueryParameter(ge=0, le=MAX_SKIP, description="Number of entries to skip")]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Maximum number of entries to return")]


class GrantController(Controller):
    path = "/credentials"
    tags = ["Grants and usage"]  # noqa: RUF012 (Litestar reads these as class attributes)
    security = SECURITY

    @post(
        "/{credential_id:str}/grants",
        status_code=200,
        opt=USE,
        cache_control=CacheControlHeader(no_store=True),
        summary="Create Grant",
        responses={**ERRORS, **errors(409)},
    )
    async def create_grant(
        self, credential_id: FromPath[str], data: JSONBody[GrantCreate], ctx: Ctx, grants: Grants
    ) -> GrantCreated:
        """Addition: a short-lived token that can call this credential's proxy route (within narrower methods,
        paths and a number of uses, when given) and nothing else. The token is shown only in this answer. Needs
        `use`; 409 when the credential has no proxy settings."""
        return await grants.create(ctx, credential_id, data)

    @get("/{credential_id:str}/grants", opt=READ, summary="List Grants", responses=ERRORS)
    async def list_grants(
        self, credential_id: FromPath[str], ctx: Ctx, grants: Grants, skip: Skip = 0, limit: Limit = 100
    ) -> GrantList:
        """Addition: the credential's grants, newest first, with their status and uses (never their tokens)."""
        return await grants.list(ctx, credential_id, skip, limit)

    @delete(
        "/{credential_id:str}/grants/{grant_id:str}",
        status_code=200,
        opt=USE,
        summary="Revoke Grant",
        responses={**ERRORS, **errors(e404="Grant not found")},
    )
    async def revoke_grant(
        self, credential_id: FromPath[str], grant_id: FromPath[str], ctx: Ctx, grants: Grants
    ) -> GrantRead:
        """Addition: revoke a grant; every instance refuses it from its next use (checked in Postgres each time)."""
        return await grants.revoke(ctx, credential_id, grant_id)

    @get("/{credential_id:str}/usage", opt=READ, summary="List Credential Usage", responses=ERRORS)
    async def list_usage(
        self, credential_id: FromPath[str], ctx: Ctx, proxy: Proxy, skip: Skip = 0, limit: Limit = 100
    ) -> UsageList:
        """Addition: one entry per proxied call, newest first: who (key, user or grant), method, host, path template,
        upstream status, bytes, duration and request id. Never a header value, a query or a body. The calls this
        instance served are all listed; another instance's show within moments (each writes its record in batches)."""
        return await usage.page(proxy.credentials, proxy.usage, ctx, credential_id, skip, limit)

    @post(
        "/{credential_id:str}/check",
        status_code=200,
        opt=USE,
        summary="Check Credential With Provider",
        responses={**ERRORS, **errors(409)},
    )
    async def check_credential(self, credential_id: FromPath[str], ctx: Ctx, checks: Checks) -> CheckResult:
        """Addition: call the provider through the proxy as the credential's `check` settings say, and record
        `last_checked_at` and the outcome. A 401 or 403 sets status `error` with the reason."""
        return await checks.check(ctx, credential_id)
