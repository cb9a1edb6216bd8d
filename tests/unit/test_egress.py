"""The egress rules: which addresses a token endpoint may resolve to, and which URLs are refused before any call."""

from __future__ import annotations

import ipaddress

import pytest

from service.oauth.egress import EgressRefused, EgressRules, check_url, parse, port_of, refused_because


@pytest.mark.parametrize(
    ("address", "loopback", "private", "refused"),
    [
        ("8.8.8.8", False, False, None),
        ("2606:4700::1111", False, False, None),
        ("10.1.2.3", False, True, None),
        ("fd12:3456::1", False, False, "a private address"),
        ("fe80::1", False, True, None),
        ("::1", False, False, "a loopback address"),
        ("::1", True, False, None),
        ("169.254.169.254", True, True, "a cloud metadata address"),
        ("::ffff:169.254.169.254", True, True, "a cloud metadata address"),
        ("224.0.0.1", True, True, "not a unicast address"),
        # 6to4 embedding loopback and metadata, Azure's WireServer (issue 16, point 10)
        ("2002:7f00:1::", False, False, "a loopback address"),
        ("2002:a9fe:a9fe::", True, True, "a cloud metadata address"),
        ("2002:0a01:0203::", False, False, "a private address"),
        ("2002:0808:0808::", False, False, None),
        ("168.63.129.16", True, True, "a cloud metadata address"),
        ("::ffff:168.63.129.16", True, True, "a cloud metadata address"),
    ],
)
def test_address_rules(address: str, loopback: bool, private: bool, refused: str | None) -> None:
    rules = EgressRules(allow_loopback=loopback, allow_private=private)

    assert refused_because(ipaddress.ip_address(address), rules) == refused


@pytest.mark.parametrize("url", ["https://auth.example.com:0/token", "https://8.8.8.8:0/token"])
async def test_port_zero_is_refused(url: str) -> None:
    with pytest.raises(EgressRefused, match="invalid port"):
        port_of(parse(url, EgressRules()))
    with pytest.raises(EgressRefused, match="invalid port"):
        await check_url(url, EgressRules(), 1.0)


@pytest.mark.parametrize(
    "url", ["https://[2002:7f00:1::]/token", "https://[2002:a9fe:a9fe::]/token", "https://168.63.129.16/token"]
)
async def test_embedded_and_wireserver_literals_are_refused_when_stored(url: str) -> None:
    with pytest.raises(EgressRefused, match="not allowed"):
        await check_url(url, EgressRules(allow_private=True), 1.0)
