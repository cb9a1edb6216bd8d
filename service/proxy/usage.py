"""The usage record of a credential, as ``GET /api/v1/credentials/{id}/usage`` pages through it."""

from __future__ import annotations

from db import usage
from service.context import RequestContext
from service.credentials.service import CredentialService
from service.grants.schemas import UsageList, UsageRead


async def page(
    credentials: CredentialService, ctx: RequestContext, credential_id: str, skip: int, limit: int
) -> UsageList:
    credential = await credentials.get(ctx, credential_id)
    rows, total = await usage.page(credential.id, skip=skip, limit=limit)
    return UsageList(
        usage=[
            UsageRead(
                **{name: row[name] for name in UsageRead.__struct_fields__ if name not in {"id", "grant_id"}},
                id=str(row["id"]),
                grant_id=None if row["grant_id"] is None else str(row["grant_id"]),
            )
            for row in rows
        ],
        total=total,
        page=skip // limit + 1,
        size=limit,
    )
