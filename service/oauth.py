"""OAuth2 token refresh: the token endpoint client, the egress rules it obeys, and in-process single flight.

The client speaks RFC 6749 section 6 (``grant_type=refresh_token``) with ``client_secret_basic`` or
``client_secret_post``. Every call resolves the ``token_url`` host, refuses addresses outside what the settings
allow (private, link-local, loopback; cloud metadata always) and connects to the address it checked, so a DNS
answer that changes between the check and the connect cannot redirect it. Each attempt has a deadline and the
response body a size bound. Tokens never appear in logs or messages: only the provider's error code does.

Cross-instance single flight is the credential's row lock (``service.credentials``); ``SingleFlight`` here makes
the callers of one process share one attempt rather than queue on that lock one by one.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import random
import re
import socket
import ssl
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import SplitResult, quote, urlsplit

import httpx
import msgspec

from service.errors import BadGateway
from service.schemas import AuthType
from service.secret_types import REFRESHABLE

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger("service.oauth")

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, OpenStack; AWS's IPv6 one; Alibaba): never a token endpoint.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in all but name
# RFC 6749 section 5.2: error codes are printable ASCII without '"' and '\'.
_ERROR_CODE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$")


class EgressRefused(Exception):
    """The ``token_url`` may not be called under the egress rules (the message says why; it names no secret)."""


class RefreshRejected(Exception):
    """The provider refused the refresh for good (``invalid_grant``, 400, 401): retrying cannot help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How refreshes are made; built from the ``CREDENTIALS_OAUTH_*`` settings."""

    skew: timedelta = timedelta(seconds=60)
    window: timedelta = timedelta(seconds=300)
    timeout: float = 10.0
    max_attempts: int = 3
    backoff: float = 0.5
    max_response_bytes: int = 64 * 1024
    allow_loopback: bool = False
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshPolicy:
        return cls(
            skew=timedelta(seconds=settings.oauth_refresh_skew_seconds),
            window=timedelta(seconds=settings.oauth_proactive_window_seconds),
            timeout=settings.oauth_timeout_seconds,
            max_attempts=settings.oauth_max_attempts,
            backoff=settings.oauth_retry_backoff_seconds,
            max_response_bytes=settings.oauth_max_response_bytes,
            allow_loopback=settings.oauth_allow_loopback,
            allow_private=settings.oauth_allow_private,
        )


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


# -- egress --------------------------------------------------------------------------------------------------------


def refused_because(address: IPAddress, policy: RefreshPolicy) -> str | None:
    """Why an address may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:  # before is_reserved, which ::1 (in ::/8) also is
        return None if policy.allow_loopback else "a loopback address"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not a unicast address"
    if address.is_link_local:
        return None if policy.allow_private else "a link-local address"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return None if policy.allow_private else "a private address"
    return None


def _parse(url: str, policy: RefreshPolicy) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise EgressRefused("token_url must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("token_url must not carry user information")
    if parts.scheme == "http" and not policy.allow_loopback:
        raise EgressRefused("token_url must use https")
    return parts


def _port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        raise EgressRefused("token_url has an invalid port") from None
    return port if port is not None else (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def check_addresses(parts: SplitResult, addresses: list[IPAddress], policy: RefreshPolicy) -> None:
    """Refuse when any address is off limits, and plain http to anything but loopback."""
    if not addresses:
        raise EgressRefused("token_url's host does not resolve")
    for address in addresses:
        reason = refused_because(address, policy)
        if reason is not None:
            raise EgressRefused(f"token_url's host resolves to {reason}, which is not allowed")
    if parts.scheme == "http" and not all(a.is_loopback for a in addresses):
        raise EgressRefused("token_url must use https (http is allowed only to loopback)")


async def check_token_url(url: str, policy: RefreshPolicy) -> None:
    """The check made on create and update. A name that does not resolve now is accepted (over https): it is
    checked again before every refresh, where it counts."""
    parts = _parse(url, policy)
    assert parts.hostname is not None  # _parse refused URLs without one
    try:
        async with asyncio.timeout(min(policy.timeout, 5.0)):
            addresses = await resolve(parts.hostname, _port(parts))
    except (OSError, TimeoutError):
        if parts.scheme == "http":
            raise EgressRefused("token_url must use https (http is allowed only to loopback)") from None
        return
    check_addresses(parts, addresses, policy)


# -- the token endpoint --------------------------------------------------------------------------------------------


class _Transient(Exception):
    """One attempt failed in a way a later attempt may not (timeout, connection, 5xx, 429)."""


class TokenClient:
    """Calls token endpoints under a ``RefreshPolicy``. One short-lived HTTP client per refresh: refreshes are
    rare (one per token lifetime), and a shared pool would keep connections to addresses checked long ago."""

    def __init__(self, policy: RefreshPolicy | None = None) -> None:
        self.policy = policy or RefreshPolicy()
        self._ssl = ssl.create_default_context()
        try:
            import certifi

            self._ssl.load_verify_locations(certifi.where())
        except ImportError:  # pragma: no cover (certifi comes with httpx)
            pass

    async def check(self, auth_type: AuthType, credentials: dict[str, Any]) -> None:
        """Egress check of a refreshable credential's ``token_url`` (create and update)."""
        url = credentials.get("token_url")
        if auth_type in REFRESHABLE and isinstance(url, str):
            await check_token_url(url, self.policy)

    async def refresh(self, auth_type: AuthType, secret: dict[str, Any]) -> Tokens:
        """Refresh the tokens in ``secret``: ``Tokens``, or ``RefreshRejected`` (for good), or ``BadGateway``
        (after the attempts the policy allows)."""
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            try:
                async with asyncio.timeout(policy.timeout):
                    tokens = await self._attempt(secret)
            except TimeoutError:
                problem = f"the token endpoint did not answer within {policy.timeout:g} s"
            except _Transient as exc:
                problem = str(exc)
            except EgressRefused as exc:
                raise BadGateway(f"Token refresh refused: {exc}") from None
            else:
                if auth_type is AuthType.oauth_token_refresh_rotation and tokens.refresh_token is None:
                    raise RefreshRejected("the provider returned no new refresh_token for a rotating credential")
                return tokens
            log.warning(
                "token refresh attempt %d/%d failed: %s", attempt, policy.max_attempts, problem
            )  # safe: fixed texts
            if attempt < policy.max_attempts:
                await asyncio.sleep(min(policy.backoff * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.5))  # noqa: S311
        raise BadGateway(f"Token refresh failed after {policy.max_attempts} attempt(s): {problem}")

    async def _attempt(self, secret: dict[str, Any]) -> Tokens:
        parts = _parse(str(secret["token_url"]), self.policy)
        host, port = str(parts.hostname), _port(parts)
        try:
            addresses = await resolve(host, port)
        except OSError:
            raise _Transient("token_url's host does not resolve") from None
        check_addresses(parts, addresses, self.policy)
        # Connect to the address just checked; Host and TLS SNI (so the certificate check) keep the name.
        pinned = addresses[0]
        netloc = f"[{pinned}]:{port}" if pinned.version == 6 else f"{pinned}:{port}"
        url = parts._replace(netloc=netloc).geturl()
        headers = {"Host": parts.netloc, "Accept": "application/json"}
        extensions: dict[str, Any] = {}
        if parts.scheme == "https" and host != str(pinned):
            extensions["sni_hostname"] = host
        form = {"grant_type": "refresh_token", "refresh_token": str(secret["refresh_token"])}
        if secret.get("scope"):
            form["scope"] = str(secret["scope"])
        client_id, client_secret = secret.get("client_id"), secret.get("client_secret")
        if client_secret and secret.get("token_endpoint_auth_method") != "client_secret_post":
            # RFC 6749 section 2.3.1: both parts form-urlencoded before base64.
            pair = f"{quote(str(client_id or ''), safe='')}:{quote(str(client_secret), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            if client_id:
                form["client_id"] = str(client_id)
            if client_secret:
                form["client_secret"] = str(client_secret)
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
        return b"".join(chunks)


def _tokens_from(status: int, body: bytes) -> Tokens:
    """Interpret the token endpoint's answer (RFC 6749 sections 5.1 and 5.2)."""
    try:
        payload = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        payload = None
    if status in {400, 401}:
        code = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(code, str) and _ERROR_CODE.match(code):
            raise RefreshRejected(f"the provider rejected the refresh: {code} (HTTP {status})")
        raise RefreshRejected(f"the provider rejected the refresh (HTTP {status})")
    if status >= 500 or status in {408, 429}:
        raise _Transient(f"the token endpoint answered HTTP {status}")
    if status != 200:
        raise BadGateway(f"Token refresh failed: the token endpoint answered HTTP {status}")
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str) or not payload["access_token"]:
        raise BadGateway("Token refresh failed: the token endpoint's answer has no access_token")
    expires_in = payload.get("expires_in")
    expires_at = None
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and 0 <= expires_in < 10 * 365 * 86400:
        expires_at = (datetime.now(UTC) + timedelta(seconds=expires_in)).replace(microsecond=0)
    refresh_token = payload.get("refresh_token")
    token_type, scope = payload.get("token_type"), payload.get("scope")
    return Tokens(
        access_token=payload["access_token"],
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expires_at=expires_at,
        token_type=token_type if isinstance(token_type, str) else None,
        scope=scope if isinstance(scope, str) else None,
    )


# -- in-process single flight --------------------------------------------------------------------------------------


class SingleFlight(Generic[T]):
    """Callers with the same key share one running task and all receive its result (or its error).

    The task is shielded: a caller that goes away (client disconnect) does not cancel a refresh half done, which
    could lose a refresh token the provider has already rotated.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(start())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited any more is not reported as lost
