"""One POST to a URL a caller configured (a revocation endpoint, a webhook), under the egress rules: the host is
resolved and checked, and the connection goes to the checked address (Host and TLS SNI keep the name), so a DNS
answer that changes between the check and the connect cannot redirect it."""

from __future__ import annotations

from typing import Any

import httpx

from service.oauth import egress
from service.oauth.egress import EgressRefused, EgressRules


class Unreachable(Exception):
    """The URL could not be called this time (does not resolve, refused by the egress rules, connect or read
    failed, timed out); the message names no secret."""


async def post(
    client: httpx.AsyncClient,
    url: str,
    rules: EgressRules,
    *,
    headers: dict[str, str],
    data: dict[str, str] | None = None,
    content: bytes | None = None,
) -> int:
    """POST and return the status code (the body is not read beyond what closing needs)."""
    try:
        parts = egress.parse(url, rules)
        host, port = str(parts.hostname), egress.port_of(parts)
        try:
            addresses = await egress.resolve(host, port)
        except OSError:
            raise Unreachable("the host does not resolve") from None
        egress.check_addresses(parts, addresses, rules)
    except EgressRefused as exc:
        raise Unreachable(f"refused by the egress rules: {str(exc).replace('token_url', 'the URL')}") from None
    pinned = addresses[0]
    netloc = f"[{pinned}]:{port}" if pinned.version == 6 else f"{pinned}:{port}"
    extensions: dict[str, Any] = {}
    if parts.scheme == "https" and host != str(pinned):
        extensions["sni_hostname"] = host
    request = client.build_request(
        "POST",
        parts._replace(netloc=netloc).geturl(),
        data=data,
        content=content,
        headers={**headers, "Host": parts.netloc},
        extensions=extensions,
    )
    try:
        response = await client.send(request, stream=True)
        await response.aclose()
    except httpx.TimeoutException:
        raise Unreachable("timed out") from None
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot connect ({type(exc).__name__})") from None
    return response.status_code
