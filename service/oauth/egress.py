"""Which addresses the service may call on a credential's behalf (OAuth token endpoints).

Every call resolves the URL's host and refuses addresses outside what the rules allow (private, link-local,
loopback; cloud metadata always), then connects to the address it checked, so a DNS answer that changes between
the check and the connect cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, OpenStack; AWS's IPv6 one; Alibaba; ECS task metadata) and Azure's
# WireServer (168.63.129.16: a public address, yet the host's agent endpoint): never a token endpoint.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2", "168.63.129.16")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in all but name


class EgressRefused(Exception):
    """The URL may not be called under the egress rules (the message says why; it names no secret)."""


@dataclass(frozen=True, slots=True)
class EgressRules:
    """What may be called besides public addresses (``CREDENTIALS_OAUTH_ALLOW_*``)."""

    allow_loopback: bool = False
    allow_private: bool = False


def refused_because(address: IPAddress, rules: EgressRules) -> str | None:
    """Why an address may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 embedded in IPv6 is judged as the IPv4 address it reaches: mapped (::ffff:a.b.c.d) and 6to4
        # (2002:aabb:ccdd::, RFC 3056). Without this, 2002:7f00:1:: reaches 127.0.0.1 through a 6to4 relay and
        # 2002:a9fe:a9fe:: the metadata service. (Teredo, 2001::/32, is already refused as private.)
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            address = embedded
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:  # before is_reserved, which ::1 (in ::/8) also is
        return None if rules.allow_loopback else "a loopback address"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not a unicast address"
    if address.is_link_local:
        return None if rules.allow_private else "a link-local address"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return None if rules.allow_private else "a private address"
    return None


def parse(url: str, rules: EgressRules, name: str = "token_url") -> SplitResult:
    """``name``: the field the URL came from, for the messages (``token_url``, the proxy's ``base_url``)."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise EgressRefused(f"{name} must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused(f"{name} must not carry user information")
    if parts.scheme == "http" and not rules.allow_loopback:
        raise EgressRefused(f"{name} must use https")
    return parts


def port_of(parts: SplitResult, name: str = "token_url") -> int:
    try:
        port = parts.port
    except ValueError:
        raise EgressRefused(f"{name} has an invalid port") from None
    if port == 0:
        raise EgressRefused(f"{name} has an invalid port")  # port 0 means "any" to the socket layer
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


def check_addresses(
    parts: SplitResult, addresses: list[IPAddress], rules: EgressRules, name: str = "token_url"
) -> None:
    """Refuse when any address is off limits, and plain http to anything but loopback."""
    if not addresses:
        raise EgressRefused(f"{name}'s host does not resolve")
    for address in addresses:
        reason = refused_because(address, rules)
        if reason is not None:
            raise EgressRefused(f"{name}'s host resolves to {reason}, which is not allowed")
    if parts.scheme == "http" and not all(a.is_loopback for a in addresses):
        raise EgressRefused(f"{name} must use https (http is allowed only to loopback)")


async def check_url(url: str, rules: EgressRules, resolve_within: float, name: str = "token_url") -> None:
    """The check made when a URL is stored. A name that does not resolve now (within ``resolve_within`` seconds,
    at most 5) is accepted over https: it is checked again before every call, where it counts."""
    parts = parse(url, rules, name)
    assert parts.hostname is not None  # parse refused URLs without one
    try:
        async with asyncio.timeout(min(resolve_within, 5.0)):
            addresses = await resolve(parts.hostname, port_of(parts, name))
    except (OSError, TimeoutError):
        if parts.scheme == "http":
            raise EgressRefused(f"{name} must use https (http is allowed only to loopback)") from None
        return
    check_addresses(parts, addresses, rules, name)
