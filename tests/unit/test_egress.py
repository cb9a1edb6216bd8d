"""The egress rules: which addresses a token endpoint may resolve to, and which URLs are refused before any call."""

from __future__ import annotations

import ipaddress

import pytest

from service.oauth.egress import EgressRules, refused_because


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
    ],
)
def test_address_rules(address: str, loopback: bool, private: bool, refused: str | None) -> None:
    rules = EgressRules(allow_loopback=loopback, allow_private=private)

    assert refused_because(ipaddress.ip_address(address), rules) == refused
