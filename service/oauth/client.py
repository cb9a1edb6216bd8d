"""The token endpoint client: RFC 6749 section 6 (``grant_type=refresh_token``), retried with ``stamina``.

It authenticates with ``client_secret_basic`` or ``client_secret_post``, obeys the egress rules at every attempt
(connecting to the address it checked; Host and TLS SNI keep the name), gives each attempt a deadline and the
answer a size bound, and retries what a later attempt may fix (timeouts, connection errors, 5xx, 408, 429).
Tokens never appear in logs or messages: only the provider's error code does.

It raises its own errors, ``RefreshRejected`` (for good) and ``RefreshFailed`` (this time); what they mean for a
credential and for the API is decided by the caller (``service.credentials.refresh``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import certifi
import httpx
import msgspec
import stamina

from service.oauth import egress
from service.oauth.egress import EgressRefused, EgressRules

# RFC 6749 section 5.2 allows any printable ASCII in an error code, so a provider could put a URL or a sentence of
# its choosing there, which would reach our clients in status_reason and 409 bodies. Only codes shaped like the
# registered ones (lower-case words joined by underscores, bounded) are kept; anything else is "unrecognised".
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_TEN_YEARS = 10 * 365 * 86400


class RefreshRejected(Exception):
    """The provider refused the refresh for good (``invalid_grant``, 400, 401): retrying cannot help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefreshFailed(Exception):
    """No usable answer this time (unreachable, timed out, 5xx, refused by the egress rules, malformed); the message
    says which, and names no secret."""


class _Transient(Exception):
    """One attempt failed in a way a later attempt may not."""


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """How token endpoints are called (``CREDENTIALS_OAUTH_*``)."""

    timeout: float = 10.0
    max_attempts: int = 3
    backoff: float = 0.5
    max_response_bytes: int = 64 * 1024
    egress: EgressRules = field(default_factory=EgressRules)


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a refresh sends (tokens kept out of ``repr``)."""

    token_url: str
    refresh_token: str = field(repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope: str | None = None
    post_client_secret: bool = False
    """``client_secret_post``: the client secret in the form rather than in HTTP Basic (the default)."""


class TokenResponse(msgspec.Struct):
    """A successful token endpoint answer (RFC 6749 section 5.1); other members are ignored."""

    access_token: str
    refresh_token: str | None = None
    expires_in: int | float | str | None = None
    token_type: str | None = None
    scope: str | None = None


_MEMBERS = frozenset(TokenResponse.__struct_fields__)


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a successful refresh returned (tokens kept out of ``repr``)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None
    token_type: str | None
    scope: str | None

    def merged_into(self, secret: dict[str, Any]) -> dict[str, Any]:
        """The credential's secret with these tokens in place of the old ones; other fields kept as they were."""
        new = dict(secret)
        new["access_token"] = self.access_token
        if self.refresh_token is not None:
            new["refresh_token"] = self.refresh_token
        if self.expires_at is not None:
            new["expires_at"] = self.expires_at.isoformat()
        else:
            new.pop("expires_at", None)  # the old expiry says nothing about the new token
        if self.token_type is not None:
            new["token_type"] = self.token_type
        if self.scope is not None:
            new["scope"] = self.scope
        return new


class TokenClient:
    """Calls token endpoints under a ``ClientPolicy``. One short-lived HTTP client per refresh: refreshes are rare
    (one per token lifetime), and a shared pool would keep connections to addresses checked long ago."""

    def __init__(self, policy: ClientPolicy | None = None) -> None:
        self.policy = policy or ClientPolicy()
        self._ssl = ssl.create_default_context(cafile=certifi.where())

    async def check(self, url: str) -> None:
        """The egress check made when a ``token_url`` is stored (``EgressRefused`` says why not)."""
        await egress.check_url(url, self.policy.egress, self.policy.timeout)

    async def refresh(self, grant: RefreshGrant) -> Tokens:
        """``Tokens``, or ``RefreshRejected`` (for good), or ``RefreshFailed`` (after the attempts allowed)."""
        policy = self.policy
        problem = "no attempt was made"
        try:
            async for attempt in stamina.retry_context(
                on=_Transient,
                attempts=policy.max_attempts,
                timeout=None,
                wait_initial=policy.backoff,
                wait_max=5.0,
                wait_jitter=policy.backoff,
            ):
                with attempt:
                    try:
                        async with _deadline(policy.timeout):
                            return await self._attempt(grant)
                    except _Transient as exc:
                        problem = str(exc)
                        raise
        except _Transient:
            raise RefreshFailed(f"Token refresh failed after {policy.max_attempts} attempt(s): {problem}") from None
        except EgressRefused as exc:
            raise RefreshFailed(f"Token refresh refused: {exc}") from None
        raise AssertionError("unreachable: stamina returns or raises")  # pragma: no cover

    async def _attempt(self, grant: RefreshGrant) -> Tokens:
        rules = self.policy.egress
        parts = egress.parse(grant.token_url, rules)
        host, port = str(parts.hostname), egress.port_of(parts)
        try:
            addresses = await egress.resolve(host, port)
        except OSError:
            raise _Transient("token_url's host does not resolve") from None
        egress.check_addresses(parts, addresses, rules)
        pinned = addresses[0]
        netloc = f"[{pinned}]:{port}" if pinned.version == 6 else f"{pinned}:{port}"
        url = parts._replace(netloc=netloc).geturl()
        # identity: we read the raw bytes to bound them, and httpx would otherwise advertise gzip (and br, zstd).
        headers = {"Host": parts.netloc, "Accept": "application/json", "Accept-Encoding": "identity"}
        extensions: dict[str, Any] = {}
        if parts.scheme == "https" and host != str(pinned):
            extensions["sni_hostname"] = host
        form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        if grant.scope:
            form["scope"] = grant.scope
        if grant.client_secret and not grant.post_client_secret:
            # RFC 6749 section 2.3.1: both parts form-urlencoded before base64.
            pair = f"{quote(grant.client_id or '', safe='')}:{quote(grant.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            if grant.client_id:
                form["client_id"] = grant.client_id
            if grant.client_secret:
                form["client_secret"] = grant.client_secret
        timeout = httpx.Timeout(self.policy.timeout)
        try:
            async with httpx.AsyncClient(verify=self._ssl, timeout=timeout, trust_env=False) as client:
                request = client.build_request("POST", url, data=form, headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    body = await self._bounded_body(response)
                finally:
                    await response.aclose()
        except httpx.TimeoutException:
            raise _Transient("the token endpoint timed out") from None
        except httpx.TransportError as exc:
            raise _Transient(f"cannot reach the token endpoint ({type(exc).__name__})") from None
        return _tokens_from(response.status_code, body)

    async def _bounded_body(self, response: httpx.Response) -> bytes:
        limit = self.policy.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _Transient(f"the token endpoint's response exceeds {limit} bytes")
        chunks, total = [], 0
        async for chunk in response.aiter_raw():
            total += len(chunk)
            if total > limit:
                raise _Transient(f"the token endpoint's response exceeds {limit} bytes")
            chunks.append(chunk)
        return _decoded(b"".join(chunks), response.headers.get("Content-Encoding", ""), limit)


def _decoded(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before compression, itself bounded by ``limit`` (a small gzip can expand enormously).
    We ask for identity, but a provider may compress anyway, and with rotating refresh tokens it has already spent
    the old one: the answer must be read, not refused."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
    for coding in reversed(codings):  # applied in the order listed, so undone from the last
        if coding not in _ZLIB_WBITS:
            raise RefreshFailed(f"Token refresh failed: the token endpoint answered with Content-Encoding {coding!r}")
        inflater = zlib.decompressobj(_ZLIB_WBITS[coding])
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise RefreshFailed("Token refresh failed: the token endpoint's compressed answer is corrupt") from None
        if len(raw) > limit or inflater.unconsumed_tail:
            raise RefreshFailed(f"Token refresh failed: the token endpoint's response exceeds {limit} bytes")
    return raw


_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """A deadline on one whole attempt (resolve, connect, send, read); its expiry is a transient failure."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise _Transient(f"the token endpoint did not answer within {seconds:g} s") from None


def _usable(member: str, value: Any) -> bool:
    if member == "expires_in" and isinstance(value, int | float) and not isinstance(value, bool):
        return True
    return isinstance(value, str)


def _tokens_from(status: int, body: bytes) -> Tokens:
    """Interpret the token endpoint's answer (RFC 6749 sections 5.1 and 5.2)."""
    if status in {400, 401}:
        try:
            code = msgspec.json.decode(body).get("error")
        except (msgspec.DecodeError, AttributeError):
            code = None
        if isinstance(code, str) and _ERROR_CODE.match(code):
            raise RefreshRejected(f"the provider rejected the refresh: {code} (HTTP {status})")
        if code is not None:
            raise RefreshRejected(f"the provider rejected the refresh: unrecognised error code (HTTP {status})")
        raise RefreshRejected(f"the provider rejected the refresh (HTTP {status})")
    if status >= 500 or status in {408, 429}:
        raise _Transient(f"the token endpoint answered HTTP {status}")
    if status != 200:
        raise RefreshFailed(f"Token refresh failed: the token endpoint answered HTTP {status}")
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        payload = None
    answer = None
    if isinstance(payload, dict):
        # Members of an unexpected type are dropped rather than failing the refresh: the provider may already have
        # rotated the refresh token, and an odd token_type must not cost the new one.
        usable = {k: v for k, v in payload.items() if k in _MEMBERS and _usable(k, v)}
        with contextlib.suppress(msgspec.ValidationError):
            answer = msgspec.convert(usable, TokenResponse)
    if answer is None or not answer.access_token:
        raise RefreshFailed("Token refresh failed: the token endpoint's answer has no access_token")
    expires_in = answer.expires_in
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    expires_at = None
    if isinstance(expires_in, int | float) and 0 <= expires_in < _TEN_YEARS:
        expires_at = (datetime.now(UTC) + timedelta(seconds=expires_in)).replace(microsecond=0)
    return Tokens(
        access_token=answer.access_token,
        refresh_token=answer.refresh_token or None,
        expires_at=expires_at,
        token_type=answer.token_type,
        scope=answer.scope,
    )
