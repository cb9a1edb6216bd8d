"""Calls to upstreams: the egress rules at every call, connections to the address that was checked, and bounded
time and size.

httpx, as the token endpoint client already uses: async, per-phase timeouts, streamed raw reads, and a connection
pool per client. Each upstream (scheme, host, port, and the address its name resolved to) gets a client of its own:
a connection opened for one host name is never reused for another name on the same address, whose TLS
certificate it was not checked against.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import certifi
import httpx

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

    client: httpx.AsyncClient
    url: str
    host: str
    """``Host`` header and TLS server name: the name in ``base_url``."""
    hostname: str
    extensions: dict[str, Any]


class Upstreams:
    """The HTTP clients of the proxy, one per upstream address; closed with the service."""

    def __init__(self, policy: UpstreamPolicy) -> None:
        self.policy = policy
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        self._clients: dict[tuple[str, str, int, str], httpx.AsyncClient] = {}

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
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._client()
        extensions: dict[str, Any] = {}
        if parts.scheme == "https" and host != str(pinned):
            extensions["sni_hostname"] = host
        url = SplitResult(parts.scheme, netloc, parts.path.rstrip("/") + path, query, "").geturl()
        return Target(client=client, url=url, host=parts.netloc, hostname=host, extensions=extensions)

    def _client(self) -> httpx.AsyncClient:
        limit = self.policy.max_connections
        return httpx.AsyncClient(
            verify=self._ssl,
            timeout=httpx.Timeout(self.policy.timeout),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit, keepalive_expiry=30),
            trust_env=False,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def host_of(base_url: str) -> str:
    return (urlsplit(base_url).hostname or "")[:255]


async def bounded(response: httpx.Response, limit: int, counted: list[int]) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives (still content-encoded), cut past ``limit`` bytes; closes the response
    whatever happens (the caller went away, the stream broke), so no connection is left checked out."""
    try:
        async for chunk in response.aiter_raw():
            counted[0] += len(chunk)
            if counted[0] > limit:
                raise BadGateway(f"The upstream's answer exceeds {limit} bytes")
            yield chunk
    finally:
        await response.aclose()
