"""The proxy settings of a credential as sent (``ProxyConfig``) and as stored and shown (``ProxyView``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from service.schemas import ReadSchema, Schema

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
METHODS: tuple[Method, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""RFC 9110 section 9.2.2: only these are retried after an upstream 401 and a token refresh."""

BaseUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=2048,
        description="Where the proxy sends calls: an https URL (a path is allowed; no user info, query or fragment)",
        examples=["https://api.stripe.com"],
    ),
]
PathPrefix = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$",
        max_length=512,
        description="A path prefix calls may use, starting with '/' (no '..', '//', '%' or '\\')",
        examples=["/v1/charges"],
    ),
]
HeaderName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$", examples=["X-Api-Key"])]
QueryName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~-]{1,64}$", examples=["api_key"])]


class Injection(Schema, kw_only=True):
    """How the secret goes into each call; left out, it follows ``auth_type`` (see ``ProxyConfig``)."""

    header: HeaderName | None = None
    """``api_key``: send the key in this header (its value alone) instead of ``Authorization: Bearer``."""
    query: QueryName | None = None
    """``api_key``: send the key in this query parameter instead."""
    public_key_header: HeaderName | None = None
    """``public_key_secret``: the header for ``public_key`` (required for that type)."""
    secret_key_header: HeaderName | None = None
    """``public_key_secret``: the header for ``secret_key`` (required for that type)."""


class ProxyCheck(Schema, kw_only=True):
    """A provider check: one call through the proxy that tells whether the credential still works."""

    method: Method = "GET"
    path: PathPrefix
    expected_status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200


class ProxyConfig(Schema, kw_only=True):
    """Addition: makes the credential usable through ``/api/v1/proxy/{id}/...`` without revealing it.

    Injection follows ``auth_type`` unless ``inject`` says otherwise: ``api_key`` as a bearer token (or a named header
    or query parameter), ``basic_auth`` as HTTP Basic, access and OAuth tokens as a bearer token with the current
    access token, ``public_key_secret`` in two named headers. ``connection_string`` and ``custom`` cannot be proxied.
    """

    base_url: BaseUrl
    methods: Annotated[list[Method], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: list(METHODS)
    )
    path_prefixes: Annotated[list[PathPrefix], msgspec.Meta(min_length=1, max_length=32)] = msgspec.field(
        default_factory=lambda: ["/"]
    )
    inject: Injection | None = None
    check: ProxyCheck | None = None


InjectionKind = Literal["bearer", "header", "query", "basic", "key_pair"]


class InjectionView(ReadSchema, frozen=True, kw_only=True):
    kind: InjectionKind
    names: list[str] = msgspec.field(default_factory=list)
    """The header or query parameter name(s) (``header``, ``query``: one; ``key_pair``: public then secret)."""


class ProxyCheckView(ReadSchema, frozen=True, kw_only=True):
    method: str
    path: str
    expected_status: int


class ProxyView(ReadSchema, frozen=True, kw_only=True):
    """The proxy settings as stored and shown in the read view, with the outcome of the last provider check."""

    base_url: str
    methods: list[str]
    path_prefixes: list[str]
    injection: InjectionView
    check: ProxyCheckView | None = None
    last_checked_at: datetime | None = None
    last_check_outcome: Literal["ok", "unexpected_status", "rejected", "failed"] | None = None
    last_check_status: int | None = None
    """The upstream's HTTP status in the last check (None when it could not be reached)."""
