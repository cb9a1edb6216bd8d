"""Grants: ``cg_<lookup>_<secret>`` tokens bound to one credential's proxy route.

Stored as the SHA-256 of the 256-bit secret part (nothing to brute-force, so a fast hash is enough), compared in
constant time; an unknown lookup is compared against a dummy hash. A grant authenticates only the proxy route of
its credential; presented anywhere else it is not an API key, and answers 401 like any unknown key. Expiry,
revocation and ``max_uses`` are decided in Postgres at each use (``db.grants.consume``), so a revocation is seen by
every instance on the next call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import timedelta
from typing import Any

from db import grants as rows
from service.auth.principal import Permission, Principal
from service.context import RequestContext
from service.credentials import model
from service.credentials.model import Action
from service.credentials.service import CredentialService
from service.errors import AuthFailure, NotFound, RequestInvalid, Unauthorized
from service.grants.schemas import GrantCreate, GrantCreated, GrantList, GrantRead
from service.grants.scope import GrantScope
from service.proxy import config, paths

PREFIX = "cg_"
INVALID_GRANT = "Invalid grant"
_FORMAT = re.compile(r"^cg_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such grant").hexdigest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A fresh grant token: its lookup id, the hash to store, and the token (shown once, stored nowhere)."""
    lookup, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return lookup, _hash(secret), f"{PREFIX}{lookup}_{secret}"


def status_of(row: dict[str, Any]) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] <= model.now():
        return "expired"
    if row["max_uses"] is not None and row["uses"] >= row["max_uses"]:
        return "used_up"
    return "active"


def _read(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "credential_id": str(row["credential_id"]),
        "label": row["label"],
        "methods": row["methods"],
        "path_prefixes": row["path_prefixes"],
        "max_uses": row["max_uses"],
        "uses": row["uses"],
        "expires_at": row["expires_at"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "revoked_at": row["revoked_at"],
        "status": status_of(row),
    }


async def principal_of(token: str, credential_id: str) -> Principal:
    """The principal of a grant token presented on ``credential_id``'s proxy route, or 401."""
    match = _FORMAT.match(token)
    row = await rows.by_lookup(match.group(1)) if match else None
    presented = _hash(match.group(2)) if match else _DUMMY_HASH
    valid = hmac.compare_digest(presented, row["secret_hash"] if row else _DUMMY_HASH) and row is not None
    if not valid or row is None or str(row["credential_id"]) != credential_id.lower():
        raise Unauthorized(INVALID_GRANT, AuthFailure.invalid_grant)
    if status_of(row) != "active":
        raise Unauthorized(INVALID_GRANT, AuthFailure.invalid_grant)
    return Principal(
        workspace_id=row["workspace_id"],
        actor_id=f"grant:{row['id']}",
        permissions=frozenset({Permission.use}),
        kind="grant",
        provider="grant",
        label=row["label"],
        grant=GrantScope(
            id=str(row["id"]),
            credential_id=str(row["credential_id"]),
            methods=tuple(row["methods"]) if row["methods"] is not None else None,
            path_prefixes=tuple(row["path_prefixes"]) if row["path_prefixes"] is not None else None,
        ),
    )


class GrantService:
    def __init__(self, credentials: CredentialService, default_ttl: int, max_ttl: int) -> None:
        self.credentials = credentials
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    async def create(self, ctx: RequestContext, credential_id: str, data: GrantCreate) -> GrantCreated:
        credential = await self.credentials.get(ctx, credential_id)
        view = config.require(credential.proxy)
        credential.check(Action.use)
        ttl = data.ttl_seconds if data.ttl_seconds is not None else self.default_ttl
        if ttl > self.max_ttl:
            raise RequestInvalid.at(
                ["body", "ttl_seconds"], f"Input should be less than or equal to {self.max_ttl}", "less_than_equal"
            )
        for i, method in enumerate(data.methods or []):
            if method not in view.methods:
                raise RequestInvalid.at(
                    ["body", "methods", i], f"{method} is not among the credential's proxy methods", "not_narrower"
                )
        for i, prefix in enumerate(data.path_prefixes or []):
            if "//" in prefix or any(part in {".", ".."} for part in prefix.split("/")):
                raise RequestInvalid.at(
                    ["body", "path_prefixes", i], "A prefix must not hold '//', '.' or '..'", "value_error"
                )
            if not paths.within(prefix, view.path_prefixes):
                raise RequestInvalid.at(
                    ["body", "path_prefixes", i], "The prefix is outside the credential's path prefixes", "not_narrower"
                )
        (lookup, secret_hash, token), when = new_token(), model.now()
        row = {
            "id": uuid.uuid4(),
            "credential_id": credential.id,
            "workspace_id": credential.workspace_id,
            "lookup_id": lookup,
            "secret_hash": secret_hash,
            "label": data.label,
            "methods": list(dict.fromkeys(data.methods)) if data.methods else None,
            "path_prefixes": list(dict.fromkeys(data.path_prefixes)) if data.path_prefixes else None,
            "max_uses": data.max_uses,
            "uses": 0,
            "expires_at": when + timedelta(seconds=ttl),
            "created_at": when,
            "created_by": ctx.actor_id,
            "revoked_at": None,
        }
        await rows.insert(row)
        return GrantCreated(**_read(row), token=token)

    async def list(self, ctx: RequestContext, credential_id: str, skip: int, limit: int) -> GrantList:
        credential = await self.credentials.get(ctx, credential_id)
        found, total = await rows.page(credential.id, skip=skip, limit=limit)
        return GrantList(
            grants=[GrantRead(**_read(row)) for row in found], total=total, page=skip // limit + 1, size=limit
        )

    async def revoke(self, ctx: RequestContext, credential_id: str, grant_id: str) -> GrantRead:
        credential = await self.credentials.get(ctx, credential_id)
        try:
            gid = uuid.UUID(grant_id)
        except ValueError:
            raise NotFound("Grant not found") from None
        row = await rows.revoke(credential.id, gid, model.now())
        if row is None:
            raise NotFound("Grant not found")
        return GrantRead(**_read(row))
