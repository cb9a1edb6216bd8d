"""``service.hot_routes`` answers get, update and delete of one credential exactly as Litestar does.

Each case is sent to the app as configured (the layer on) and to an app with ``CREDENTIALS_FAST_ROUTES=false``
(Litestar answers), on the same database and Vault; the two answers must be the same: status, headers and body,
once the values that differ by nature (ids, workspaces, timestamps, ETags, request ids) are put in a normal
form. A spy on the layer says which cases it answered itself and which it handed to Litestar, so the comparison
cannot pass by both answers coming from Litestar.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

from service import hot_routes
from service.config import Settings
from tests.support.api import Caller, MakeCaller, valid_secret
from tests.support.servers import running_app

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_WORKSPACE = re.compile(r"wsp_[0-9a-f]{8}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


@pytest.fixture(scope="module")
async def litestar_only(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same service with the layer off: Litestar answers every route."""
    off = msgspec.structs.replace(settings, http=msgspec.structs.replace(settings.http, fast_routes=False))
    async with running_app(off) as client:
        yield client


@dataclass
class Spy:
    answered: int = 0
    handed_over: int = 0


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    seen = Spy()
    serve = hot_routes._serve

    async def watched(*args: Any) -> None:
        try:
            await serve(*args)
        except hot_routes._HandOver:
            seen.handed_over += 1
            raise
        except Exception:
            seen.answered += 1  # with an error, which the layer answers through service.errors
            raise
        seen.answered += 1

    monkeypatch.setattr(hot_routes, "_serve", watched)
    return seen


def _normal_text(text: str) -> str:
    return _WORKSPACE.sub("W", _TIME.sub("T", _UUID.sub("U", text)))


def _normal(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    headers = sorted(
        (name, ", ".join(sorted(value.split(", "))) if name == "allow" else _normal_text(value))
        for name, value in response.headers.items()
        if name not in {"etag", "x-request-id"}
    )  # Litestar lists a 405's allowed methods in no fixed order
    text = _normal_text(response.text)
    body: Any = msgspec.json.decode(text) if text else None
    return response.status_code, headers, body


async def _credential(client: httpx.AsyncClient, caller: Caller, **extra: Any) -> str:
    body = {
        "label": "stripe", "auth_type": "api_key", "credential_scope": "workspace",
        "credentials": valid_secret("api_key"), **extra,
    }  # fmt: skip
    response = await client.post("/api/v1/credentials", json=body, headers=caller.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


Case = Callable[[str, Caller, Caller, str], tuple[str, str, dict[str, Any]]]
"""(credential id, caller, a caller of another workspace, the credential's current ETag) -> (method, path, kwargs)."""

LIST = "/api/v1/credentials"
BASE = LIST + "/"
ANSWERED: dict[str, Case] = {
    "get": lambda cid, me, other, etag: ("GET", BASE + cid, {"headers": me.headers}),
    "get another workspace's": lambda cid, me, other, etag: ("GET", BASE + cid, {"headers": other.headers}),
    "get an id that is no UUID": lambda cid, me, other, etag: ("GET", BASE + "not-a-uuid", {"headers": me.headers}),
    "get with no credentials": lambda cid, me, other, etag: ("GET", BASE + cid, {}),
    "get with a wrong key": lambda cid, me, other, etag: (
        "GET", BASE + cid, {"headers": {"Authorization": "Bearer ck_live_nothing_like_a_key"}},
    ),
    "get with a malformed Authorization": lambda cid, me, other, etag: (
        "GET", BASE + cid, {"headers": {"Authorization": "Basic abc"}},
    ),
    "get naming another workspace": lambda cid, me, other, etag: (
        "GET", BASE + cid, {"headers": {**me.headers, "X-Workspace-Id": other.workspace}},
    ),
    "get with a sent request id": lambda cid, me, other, etag: (
        "GET", BASE + cid, {"headers": {**me.headers, "X-Request-Id": "req-42"}},
    ),
    "update the label": lambda cid, me, other, etag: ("PUT", BASE + cid, {"headers": me.headers, "json": {"label": "x"}}),
    "update with the current ETag": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": {**me.headers, "If-Match": etag}, "json": {"label": "y"}},
    ),
    "update with a stale ETag": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": {**me.headers, "If-Match": '"stale"'}, "json": {"label": "y"}},
    ),
    "update with an empty If-Match": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": {**me.headers, "If-Match": ""}, "json": {"label": "y"}},
    ),
    "update with If-Match *": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": {**me.headers, "If-Match": "*"}, "json": {"label": "y"}},
    ),
    "update with a body of null fields": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"label": None, "description": None}},
    ),
    "update with an empty object": lambda cid, me, other, etag: ("PUT", BASE + cid, {"headers": me.headers, "json": {}}),
    "update with an expiry": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"expires_at": "2030-01-01T00:00:00Z"}},
    ),
    "update with a scope": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"credential_scope": "personal"}},
    ),
    "update the secret": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"credentials": valid_secret("api_key")}},
    ),
    "update with a secret of the wrong shape": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"credentials": {"nothing": "useful"}}},
    ),
    "update another workspace's": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": other.headers, "json": {"label": "x"}},
    ),
    "update without credentials": lambda cid, me, other, etag: ("PUT", BASE + cid, {"json": {"label": "x"}}),
    "delete": lambda cid, me, other, etag: ("DELETE", BASE + cid, {"headers": me.headers}),
    "delete another workspace's": lambda cid, me, other, etag: ("DELETE", BASE + cid, {"headers": other.headers}),
    "list": lambda cid, me, other, etag: ("GET", LIST, {"headers": me.headers}),
    "list a page": lambda cid, me, other, etag: ("GET", LIST + "?skip=0&limit=5", {"headers": me.headers}),
    "list past the end": lambda cid, me, other, etag: ("GET", LIST + "?limit=1&skip=7", {"headers": me.headers}),
    "list past the largest skip": lambda cid, me, other, etag: (
        "GET", LIST + "?skip=999999999999999999", {"headers": me.headers},
    ),
    "list another workspace": lambda cid, me, other, etag: ("GET", LIST, {"headers": other.headers}),
    "list with no credentials": lambda cid, me, other, etag: ("GET", LIST, {}),
}  # fmt: skip
HANDED_OVER: dict[str, Case] = {
    "update with an expiry without a zone": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"expires_at": "2030-01-01T00:00:00"}},
    ),
    "update with a label too long": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"label": "x" * 300}},
    ),
    "update with an unknown field": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"label": "x", "colour": "red"}},
    ),
    "update with a body that is no JSON": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": {**me.headers, "Content-Type": "application/json"}, "content": b"{nope"},
    ),
    "update with an empty body": lambda cid, me, other, etag: ("PUT", BASE + cid, {"headers": me.headers}),
    "update with a number for the label": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": me.headers, "json": {"label": 7}},
    ),
    "update with an If-Match over its limit": lambda cid, me, other, etag: (
        "PUT", BASE + cid, {"headers": {**me.headers, "If-Match": "x" * 200}, "json": {"label": "y"}},
    ),
}  # fmt: skip
NOT_MINE: dict[str, Case] = {
    "list with a filter": lambda cid, me, other, etag: ("GET", LIST + "?auth_type=api_key", {"headers": me.headers}),
    "list with a search": lambda cid, me, other, etag: ("GET", LIST + "?search=str", {"headers": me.headers}),
    "list with a limit over its range": lambda cid, me, other, etag: ("GET", LIST + "?limit=5000", {"headers": me.headers}),
    "list with a negative skip": lambda cid, me, other, etag: ("GET", LIST + "?skip=-1", {"headers": me.headers}),
    "list with a repeated limit": lambda cid, me, other, etag: (
        "GET", LIST + "?limit=2&limit=3", {"headers": me.headers},
    ),
    "list with a non-ASCII digit": lambda cid, me, other, etag: ("GET", LIST + "?limit=%C2%B2", {"headers": me.headers}),
    "list with a trailing slash": lambda cid, me, other, etag: ("GET", LIST + "/", {"headers": me.headers}),
    "get with a query string": lambda cid, me, other, etag: ("GET", BASE + cid + "?include=masked", {"headers": me.headers}),
    "get with a trailing slash": lambda cid, me, other, etag: ("GET", BASE + cid + "/", {"headers": me.headers}),
    "the auth-types route": lambda cid, me, other, etag: ("GET", BASE + "auth-types", {"headers": me.headers}),
    "head": lambda cid, me, other, etag: ("HEAD", BASE + cid, {"headers": me.headers}),
}  # fmt: skip


async def _both(
    client: httpx.AsyncClient, litestar_only: httpx.AsyncClient, make_caller: MakeCaller, case: Case
) -> tuple[httpx.Response, httpx.Response]:
    """The case sent to each app, each with callers and a credential of its own, made the same way."""
    answers = []
    for app in (client, litestar_only):
        me, other = await make_caller(), await make_caller()
        cid = await _credential(app, me)
        etag = (await app.get(BASE + cid, headers=me.headers)).headers["etag"]
        method, path, kwargs = case(cid, me, other, etag)
        answers.append(await app.request(method, path, **kwargs))
    return answers[0], answers[1]


CASES = {
    **{name: ("answered", case) for name, case in ANSWERED.items()},
    **{name: ("handed over", case) for name, case in HANDED_OVER.items()},
    **{name: ("never seen", case) for name, case in NOT_MINE.items()},
}
SPIED = {"answered": (2, 0), "handed over": (1, 1), "never seen": (1, 0)}
"""(answered, handed over) by the layer: the set-up's get, then the case."""


@pytest.mark.parametrize("name", CASES)
async def test_each_case_is_answered_as_litestar_answers_it(
    name: str, client: httpx.AsyncClient, litestar_only: httpx.AsyncClient, make_caller: MakeCaller, spy: Spy
) -> None:
    who, case = CASES[name]
    fast, litestar = await _both(client, litestar_only, make_caller, case)
    # Bodies of the routes the layer never sees may hold each app's own random secret (include=masked).
    compared = 3 if who != "never seen" else 2
    assert _normal(fast)[:compared] == _normal(litestar)[:compared]
    assert ("etag" in fast.headers) == ("etag" in litestar.headers)
    assert fast.headers["x-request-id"]  # Litestar's own 404 and 405 included (service.context.with_request_ids)
    assert litestar.headers["x-request-id"]
    if name == "get with a sent request id":
        assert fast.headers["x-request-id"] == "req-42"
    if who == "handed over":
        assert fast.status_code == 422
    assert (spy.answered, spy.handed_over) == SPIED[who]


async def test_a_handed_over_update_keeps_its_request_id_and_is_authenticated_once_more_without_a_failure(
    client: httpx.AsyncClient, make_caller: MakeCaller, spy: Spy
) -> None:
    me = await make_caller()
    cid = await _credential(client, me)
    response = await client.put(
        BASE + cid, headers={**me.headers, "X-Request-Id": "handed-1"}, json={"label": "x", "colour": "red"}
    )
    assert response.status_code == 422
    assert response.headers["x-request-id"] == "handed-1"
    assert response.json()["detail"][0]["loc"] == ["body", "colour"]
    assert spy.handed_over == 1
