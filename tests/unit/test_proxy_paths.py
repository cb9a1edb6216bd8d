"""The proxy's path rules (pure logic): what is refused, what the usage record keeps, prefix boundaries."""

from __future__ import annotations

import pytest

from service.proxy import paths

PREFIX = "/api/v1/proxy/0b0e9a4c-2f3a-4c1e-9d3a-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    "rest",
    ["/a/../b", "/a/./b", "/..", "/a/%2e%2e/b", "/a/%2E/b", "/a%2fb", "/a%5cb", "/a%00", "/a%252e", "//host/a",
     "/a//b", "/a\\b", "/a b", "/a%zz", "/a%4"],
)  # fmt: skip
def test_escapes_are_refused(rest: str) -> None:
    with pytest.raises(paths.PathRefused):
        paths.upstream_path(PREFIX + rest, PREFIX)


@pytest.mark.parametrize("rest", ["/", "/v1/charges", "/v1/charges/ch_1", "/v1/a%20b", "/v1/a:b@c,d;e=f"])
def test_plain_paths_pass_unchanged(rest: str) -> None:
    assert paths.upstream_path(PREFIX + rest, PREFIX) == rest


def test_the_path_must_follow_the_route_literally() -> None:
    with pytest.raises(paths.PathRefused):
        paths.upstream_path("/api/v1/proxy/0B0E9A4C-2F3A-4C1E-9D3A-1A2B3C4D5E6F/v1", PREFIX)


@pytest.mark.parametrize(
    ("path", "prefixes", "inside"),
    [
        ("/v1/charges", ["/v1/charges"], True),
        ("/v1/charges/ch_1", ["/v1/charges/"], True),
        ("/v1/chargesX", ["/v1/charges"], False),
        ("/v2/x", ["/v1"], False),
        ("/anything", ["/"], True),
    ],
)
def test_prefixes_match_at_segment_boundaries(path: str, prefixes: list[str], inside: bool) -> None:
    assert paths.within(path, prefixes) is inside


def test_the_template_hides_ids_and_keeps_versions() -> None:
    assert paths.template("/v1/customers/cus_9aZ/charges") == "/v1/customers/{id}/charges"
    assert paths.template("/v2.1/users/" + "a" * 40) == "/v2.1/users/{id}"
    assert paths.template("/v1/files/a%20b") == "/v1/files/{id}"
