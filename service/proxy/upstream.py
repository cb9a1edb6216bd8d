"""Calls to upstreams: the egress rules at every call, connections to the address that was checked, and bounded
time and size.

aiohttp, as the Vault transport on the request path: per-request CPU well below httpx's (whose connection pool
scans every connection, with a readability poll each, on every request: a tenth of the proxy's CPU at 32 concurrent
calls), raw (still content-encoded) streamed reads, a keep-alive pool per session, no cookie jar (an upstream's
Set-Cookie goes to the caller, never into a later call for another credential). Each upstream (scheme, host, port,
and the address its name resolved to) gets a session of its own: a connection opened for one host name is never
reused for another name on the same address, whose TLS certificate it was not checked against.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import aiohttp
import certifi
from yarl import URL

from service.errors import BadGateway
from service.oauth import egress
from service.oauth.egress import EgressRefused, EgressRules

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    rules: EgressRules
    timeout: float
    max_connections: int
    max_response_bytes: int


@dataclass(frozen=True, slots=True)
class Target:
    """Where one call goes: the client for that upstream, the URL with the checked address, what to send as Host."""

    session: aiohttp.ClientSession
    url: URL
    """With the checked address in place of the name, already percent-encoded (sent as it is)."""
    host: str
    """``Host`` header: the name (and port) in ``base_url``."""
    server_hostname: str | None
    """TLS server name and the name the certificate is checked against, when the URL holds an address."""


class Upstreams:
    """The HTTP sessions of the proxy, one per upstream address; closed with the service."""

    def __init__(self, policy: UpstreamPolicy) -> None:
        self.policy = policy
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        self._sessions: dict[tuple[str, str, int, str], aiohttp.ClientSession] = {}

    async def target(self, base_url: str, path: str, query: str) -> Target:
        """Resolve and check ``base_url``'s host now (a DNS answer may have changed since the settings were stored);
        ``BadGateway`` when the rules refuse it or it does not resolve."""
        rules = self.policy.rules
        try:
            parts = egress.parse(base_url, rules, "base_url")
            host, port = str(parts.hostname), egress.port_of(parts, "base_url")
            try:
                addresses = await egress.resolve(host, port)
            except OSError:
                raise EgressRefused("base_url's host does not resolve") from None
            egress.check_addresses(parts, addresses, rules, "base_url")
        except EgressRefused as exc:
            raise BadGateway(f"The upstream was not called: {exc}") from None
        pinned = addresses[0]
        netloc = f"[{pinned}]:{port}" if pinned.version == 6 else f"{pinned}:{port}"
        key = (parts.scheme, host, port, str(pinned))
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._session()
        server_hostname = host if parts.scheme == "https" and host != str(pinned) else None
        url = SplitResult(parts.scheme, netloc, parts.path.rstrip("/") + path, query, "").geturl()
        return Target(session=session, url=URL(url, encoded=True), host=parts.netloc, server_hostname=server_hostname)

    def _session(self) -> aiohttp.ClientSession:
        timeout = self.policy.timeout
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.policy.max_connections, ssl=self._ssl, keepalive_timeout=30, use_dns_cache=False
            ),
            # No total: a long answer may stream for as long as it keeps coming; each phase has the deadline.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),  # only what the caller asked for
        )

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def host_of(base_url: str) -> str:
    return (urlsplit(base_url).hostname or "")[:255]


async def bounded(response: aiohttp.ClientResponse, limit: int, counted: list[int]) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives (still content-encoded), cut past ``limit`` bytes. A body read to its end
    gives its connection back to the pool; whatever else happens (the caller went away, the stream broke or was
    cut) closes it, so no connection is left checked out."""
    try:
        async for chunk in response.content.iter_any():
            counted[0] += len(chunk)
            if counted[0] > limit:
                raise BadGateway(f"The upstream's answer exceeds {limit} bytes")
            yield chunk
    finally:
        response.close()
