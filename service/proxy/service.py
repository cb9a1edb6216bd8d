"""One proxied call: the checks, the secret injected, the upstream called, the answer streamed back, the use recorded.

In order: the credential as the caller may see it (a grant sees only its own), its proxy settings (409 without),
its status, the method and path against the settings and the grant's narrower limits, then one use of the grant
(counted atomically in Postgres, so a revoked, expired or used-up grant stops here on every instance). An OAuth
token that is due is refreshed first (single flight). The secret is read from Vault with the request's id and the
caller (key, user or grant) as actor, put into the request, and never into anything the caller gets back, a log
line or the usage record. On an upstream 401 for a refreshable credential, the token is refreshed once (callers
of the same credential share one refresh) and an idempotent request is sent once more.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import aiohttp
from multidict import CIMultiDictProxy

from db import grants as grant_rows
from service.context import RequestContext
from service.credentials import model
from service.credentials.model import Action, Credential
from service.credentials.schemas import AuthType
from service.credentials.service import CredentialService
from service.errors import AuthFailure, BadGateway, Forbidden, GatewayTimeout, ServiceError, Unauthorized
from service.proxy import config, paths
from service.proxy.schemas import IDEMPOTENT, ProxyView
from service.proxy.upstream import HOP_BY_HOP, Upstreams, bounded, host_of
from service.proxy.usage import UsageWriter

log = logging.getLogger("service.proxy")

# The caller's own credentials and what only concerns its hop to us: never forwarded.
_STRIPPED = HOP_BY_HOP | {
    "host", "content-length", "authorization", "x-api-key", "x-workspace-id", "cookie", "accept-encoding",
}  # fmt: skip
GRANT_SPENT = "The grant is expired, revoked or used up"


@dataclass
class Call:
    """A request to forward, as the caller sent it (the path and query still percent-encoded)."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Usage:
    """What the usage record keeps of one call: never a header value or a body."""

    credential: Credential
    ctx: RequestContext
    sink: UsageWriter
    method: str
    host: str
    path_template: str
    started: float = field(default_factory=time.monotonic)
    status: int | None = None
    outcome: str = "ok"
    request_bytes: int = 0
    response_bytes: list[int] = field(default_factory=lambda: [0])

    async def save(self) -> None:
        """Queue the record (``UsageWriter``): written in a batch soon after, never on the response path."""
        principal = self.ctx.principal
        await self.sink.put(
            {
                "credential_id": self.credential.id,
                "workspace_id": self.credential.workspace_id,
                "actor_kind": principal.kind,
                "actor_id": principal.actor_id,
                "grant_id": uuid.UUID(principal.grant.id) if principal.grant else None,
                "method": self.method,
                "host": self.host,
                "path_template": self.path_template,
                "upstream_status": self.status,
                "outcome": self.outcome,
                "request_bytes": self.request_bytes,
                "response_bytes": self.response_bytes[0],
                "duration_ms": int((time.monotonic() - self.started) * 1000),
                "request_id": self.ctx.request_id[:128],
                "created_at": model.now(),
            }
        )


@dataclass
class Proxied:
    """The upstream's answer: status, headers to return, and its body as it arrives (closed by the iterator)."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    usage: Usage


class ProxyService:
    def __init__(self, credentials: CredentialService, upstreams: Upstreams, usage: UsageWriter) -> None:
        self.credentials = credentials
        self.upstreams = upstreams
        self.usage = usage

    async def prepare(
        self, ctx: RequestContext, credential_id: str, method: str, path: str
    ) -> tuple[Credential, ProxyView]:
        """Everything decided before anything is sent: visibility, settings, status, method, path, the grant's use."""
        credential = await self.credentials.get(ctx, credential_id)
        view = config.require(credential.proxy)
        credential.check(Action.use)
        grant = ctx.principal.grant
        if method not in view.methods:
            raise Forbidden(f"The method {method} is not among the credential's allowed proxy methods")
        paths.require_within(path, view.path_prefixes, "credential's")
        if grant is not None:
            if grant.methods is not None and method not in grant.methods:
                raise Forbidden(f"The method {method} is not among the grant's allowed methods")
            if grant.path_prefixes is not None:
                paths.require_within(path, grant.path_prefixes, "grant's")
            if not await grant_rows.consume(uuid.UUID(grant.id), model.now()):
                raise Unauthorized(GRANT_SPENT, AuthFailure.invalid_grant)
        return credential, view

    async def forward(self, ctx: RequestContext, credential_id: str, call: Call) -> Proxied:
        credential, view = await self.prepare(ctx, credential_id, call.method, call.path)
        refresher = self.credentials.refresher
        if credential.refreshable and credential.due(refresher.skew):
            credential = await refresher.refresh_once(ctx, credential, force=False, margin=refresher.skew)
        else:
            credential.check_usable_now()
        record = Usage(credential, ctx, self.usage, call.method, host_of(view.base_url), paths.template(call.path))
        record.request_bytes = len(call.body)
        try:
            response, sent_secrets = await self._send(ctx, credential, view, call)
            if response.status == 401 and credential.refreshable and call.method in IDEMPOTENT:
                response.close()
                seen = credential
                credential = await refresher.refresh_once(ctx, seen, force=True, margin=refresher.skew)
                response, retried_secrets = await self._send(ctx, credential, view, call)
                sent_secrets += retried_secrets
        except ServiceError as exc:
            record.outcome = "timeout" if isinstance(exc, GatewayTimeout) else "unreachable"
            await record.save()
            raise
        record.status = response.status
        limit = self.upstreams.policy.max_response_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response.close()
            record.outcome = "too_large"
            await record.save()
            raise BadGateway(f"The upstream's answer exceeds {limit} bytes")
        hop = HOP_BY_HOP | _connection_tokens(response.headers)
        raw = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.raw_headers]
        headers = scrub([(name, value) for name, value in raw if name.lower() not in hop], sent_secrets)
        body = bounded(response, limit, record.response_bytes)
        if response.headers.get("content-encoding", "identity").strip().lower() == "identity":
            body = masked(body, body_forms(sent_secrets))
        return Proxied(response.status, headers, _recorded(body, record), record)

    async def _send(
        self, ctx: RequestContext, credential: Credential, view: ProxyView, call: Call
    ) -> tuple[aiohttp.ClientResponse, list[str]]:
        """The upstream's response, and the secret values this request carried (``scrub`` keeps them out of the
        response headers)."""
        secret = await self.credentials.read_secret(ctx, credential, credential.kv_version)
        injected, query_param = inject(view, credential.auth_type, secret)
        sent = secret_values(view, credential.auth_type, secret)
        query = call.query
        if query_param is not None:
            name, value = query_param
            kept = [part for part in query.split("&") if part and part.split("=", 1)[0] != name]
            query = "&".join([*kept, f"{name}={quote(value, safe='')}"])
        target = await self.upstreams.target(view.base_url, call.path, query)
        dropped = _STRIPPED | {name.lower() for name in injected} | _connection_tokens(call.headers)
        headers = [(name, value) for name, value in call.headers if name.lower() not in dropped]
        # Identity: a body the proxy can read is a body it can mask (``masked``).
        headers += [
            ("host", target.host),
            ("x-request-id", ctx.request_id),
            ("accept-encoding", "identity"),
            *injected.items(),
        ]
        try:
            response = await target.session.request(
                call.method,
                target.url,
                headers=headers,
                data=call.body or None,
                allow_redirects=False,
                server_hostname=target.server_hostname,
            )
        except TimeoutError:
            raise GatewayTimeout(f"The upstream did not answer within {self.upstreams.policy.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise BadGateway(f"Cannot reach the upstream ({type(exc).__name__})") from None
        return response, sent


async def _recorded(body: AsyncIterator[bytes], record: Usage) -> AsyncIterator[bytes]:
    """The body; when it is cut for its size, the call is recorded as such (the response cannot be finished, so the
    background task that records finished calls does not run)."""
    try:
        async for chunk in body:
            yield chunk
    except BadGateway:
        record.outcome = "too_large"
        await record.save()
        raise


def _connection_tokens(headers: Any) -> set[str]:
    """Header names listed in ``Connection`` (RFC 9110 section 7.6.1): hop-by-hop too."""
    values = (
        headers.getall("connection", [])
        if isinstance(headers, CIMultiDictProxy)
        else [value for name, value in headers if name.lower() == "connection"]
    )
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


_URL_HEADERS = frozenset({"location", "content-location", "link", "refresh"})
_REDACTED = "REDACTED"
_QUERY_PAIR = re.compile(r"([?&;][^=&;#?\s>]*=)([^&;#\s>]*)")
"""One ``name=value`` of a query inside a header value (up to the next separator, fragment, space or ``>``)."""


def _carries(value: str, secrets: list[str]) -> bool:
    """Whether a header value holds one of the secrets, as sent or percent-encoded (``+`` for space included)."""
    forms = (value, unquote(value), unquote_plus(value))
    return any(secret in form for secret in secrets for form in forms)


def scrub(headers: list[tuple[str, str]], secrets: list[str]) -> list[tuple[str, str]]:
    """The upstream's response headers without the secrets the request carried: an upstream that echoes the request
    (a redirect whose ``Location`` repeats the query, where a query-parameter injection put the key; a debugging
    header repeating ``Authorization``) must not show the secret to the caller. In a URL-valued header (Location,
    Content-Location, Link, Refresh) the query parameters that hold a secret are replaced by ``REDACTED``, so the
    redirect still says where; any other header that holds one is dropped. The body: ``masked``."""
    secrets = [secret for secret in secrets if secret]
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if not _carries(value, secrets):
            kept.append((name, value))
            continue
        if name.lower() in _URL_HEADERS:
            redacted = _QUERY_PAIR.sub(
                lambda pair: pair.group(1) + _REDACTED if _carries(pair.group(2), secrets) else pair.group(0), value
            )
            if not _carries(redacted, secrets):
                kept.append((name, redacted))
                continue
        msg = "proxy: the upstream's %s header held the injected secret; not returned"
        log.warning(msg, name.lower())  # safe: the header's name only, never its value
    return kept


def body_forms(secrets: list[str]) -> list[bytes]:
    """The forms a secret the request carried can take in a body that echoes it: as sent, percent-encoded (both
    ways of writing a space), and inside a JSON string; longest first."""
    forms = {
        form.encode()
        for secret in secrets
        if secret
        for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""), json.dumps(secret)[1:-1])
    }
    return sorted(forms, key=len, reverse=True)


def _mask(data: bytes, forms: list[bytes]) -> bytes:
    for form in forms:
        if form in data:
            data = data.replace(form, b"*" * len(form))
    return data


async def masked(body: AsyncIterator[bytes], forms: list[bytes]) -> AsyncIterator[bytes]:
    """``body`` with every form of the injected secret replaced by as many ``*``: an upstream that echoes the request
    into its answer (httpbin's ``/anything``, a debug endpoint) must not show the caller the secret. The length
    stays, so a declared Content-Length still holds. A form may straddle two chunks: the last bytes of each chunk
    (one fewer than the longest form) wait for the next. A body the upstream encodes (gzip) although asked for
    ``identity`` is not readable here and passes as it is."""
    if not forms:
        async for chunk in body:
            yield chunk
        return
    keep = len(forms[0]) - 1
    held = b""
    async for chunk in body:
        data = _mask(held + chunk, forms)
        cut = max(len(data) - keep, 0)
        held = data[cut:]
        if cut:
            yield data[:cut]
    if held:
        yield held


def secret_values(view: ProxyView, auth_type: AuthType, secret: dict[str, Any]) -> list[str]:
    """The secret values ``inject`` puts into a request (a public key or a user name is no secret)."""
    kind = view.injection.kind
    if kind == "basic":
        return [str(secret["password"]), _basic(secret)]
    if kind == "key_pair":
        return [str(secret["secret_key"])]
    return [str(secret["api_key"] if auth_type is AuthType.api_key else secret["access_token"])]


def _basic(secret: dict[str, Any]) -> str:
    return base64.b64encode(f"{secret['username']}:{secret['password']}".encode()).decode()


def inject(
    view: ProxyView, auth_type: AuthType, secret: dict[str, Any]
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The headers (and query parameter) that carry the secret, as the settings say (``config.injection_for``)."""
    kind, names = view.injection.kind, view.injection.names
    if kind == "basic":
        return {"Authorization": "Basic " + _basic(secret)}, None
    if kind == "key_pair":
        return {names[0]: str(secret["public_key"]), names[1]: str(secret["secret_key"])}, None
    value = str(secret["api_key"] if auth_type is AuthType.api_key else secret["access_token"])
    if kind == "header":
        return {names[0]: value}, None
    if kind == "query":
        return {}, (names[0], value)
    return {"Authorization": f"Bearer {value}"}, None
