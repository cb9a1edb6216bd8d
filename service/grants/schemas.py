"""The bodies of ``/api/v1/credentials/{id}/grants`` and ``.../usage`` (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from service.proxy.schemas import Method, PathPrefix
from service.schemas import Page, ReadSchema, Schema


class GrantCreate(Schema, kw_only=True):
    """A grant for an agent: it can call this credential's proxy route, within these limits, and nothing else."""

    label: Annotated[str, msgspec.Meta(min_length=1, max_length=100, examples=["billing agent run 42"])] | None = None
    ttl_seconds: (
        Annotated[int, msgspec.Meta(ge=1, description="Lifetime; at most CREDENTIALS_GRANT_MAX_TTL")] | None
    ) = None
    """Default: ``CREDENTIALS_GRANT_DEFAULT_TTL`` (900 s)."""
    methods: Annotated[list[Method], msgspec.Meta(min_length=1, max_length=7)] | None = None
    """Fewer methods than the credential's proxy allows (default: the same)."""
    path_prefixes: Annotated[list[PathPrefix], msgspec.Meta(min_length=1, max_length=32)] | None = None
    """Narrower prefixes, each inside one of the credential's (default: the same)."""
    max_uses: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    """Proxied calls allowed in all (default: no limit besides the lifetime)."""


class GrantRead(ReadSchema, frozen=True, kw_only=True):
    id: str
    credential_id: str
    label: str | None
    methods: list[str] | None
    path_prefixes: list[str] | None
    max_uses: int | None
    uses: int
    expires_at: datetime
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    status: str
    """``active``, ``expired``, ``used_up`` or ``revoked``."""


class GrantCreated(GrantRead, frozen=True, kw_only=True):
    """The answer to a create: the only time the token is shown."""

    token: str
    """Send as ``Authorization: Bearer <token>`` to ``/api/v1/proxy/{credential_id}/...``; nowhere else."""


class GrantList(Page, frozen=True, kw_only=True):
    grants: list[GrantRead]


class UsageRead(ReadSchema, frozen=True, kw_only=True):
    """One proxied call (no header value, no body, no query)."""

    id: str
    actor_kind: str
    actor_id: str
    grant_id: str | None
    method: str
    host: str
    path_template: str
    upstream_status: int | None
    outcome: str
    request_bytes: int
    response_bytes: int
    duration_ms: int
    request_id: str
    created_at: datetime


class UsageList(Page, frozen=True, kw_only=True):
    usage: list[UsageRead]


class CheckResult(ReadSchema, frozen=True, kw_only=True):
    """The outcome of a provider check, as recorded on the credential."""

    credential_id: str
    checked_at: datetime
    outcome: str
    """``ok``; ``unexpected_status``; ``rejected`` (401/403: the credential is set to ``error``); ``failed``."""
    upstream_status: int | None
    credential_status: str
