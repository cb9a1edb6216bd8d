"""The credential proxy against a real upstream on 127.0.0.1: injection, what is stripped, escapes, limits, timeouts,
redirects, the ``use`` permission, the usage record and the settings in the read view."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import msgspec
import pytest

from db.tables import Credential, CredentialUsage
from devtools.stack import BaoServer
from service.proxy.usage import usage_writer
from tests.support.api import API, Caller, MakeCaller, create
from tests.support.proxy import PROXY, proxy_settings, proxyable, secret_values
from tests.support.servers import running_app
from tests.support.upstream import Upstream


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(proxy_settings(database_url, bao)) as proxy_client:
        yield proxy_client


@pytest.fixture
async def caller(make_caller: MakeCaller) -> Caller:
    """A key that may also use credentials through the proxy."""
    return await make_caller(permissions=("read", "write", "reveal", "use"))


# --- injection, and what never leaves -----------------------------------------------------------------------------


INJECTIONS = {
    "api_key-bearer": ("api_key", {}, lambda s, r: r.headers["authorization"] == f"Bearer {s['api_key']}"),
    "api_key-header": (
        "api_key",
        {"inject": {"header": "X-Api-Key"}},
        lambda s, r: r.headers["x-api-key"] == s["api_key"] and "authorization" not in r.headers,
    ),
    "api_key-query": (
        "api_key",
        {"inject": {"query": "key"}},
        lambda s, r: r.query == f"a=1&key={s['api_key']}" and "authorization" not in r.headers,
    ),
    "basic_auth": (
        "basic_auth",
        {},
        lambda s, r: (
            r.headers["authorization"] == "Basic " + base64.b64encode(f"svc:{s['password']}".encode()).decode()
        ),
    ),
    "access_token": ("access_token", {}, lambda s, r: r.headers["authorization"] == f"Bearer {s['access_token']}"),
    "public_key_secret": (
        "public_key_secret",
        {"inject": {"public_key_header": "X-Public", "secret_key_header": "X-Secret"}},
        lambda s, r: (r.headers["x-public"], r.headers["x-secret"]) == (s["public_key"], s["secret_key"]),
    ),
}


@pytest.mark.parametrize("how", list(INJECTIONS))
async def test_the_upstream_receives_the_secret_and_the_caller_never_does(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.DEBUG)
    auth_type, proxy, received_ok = INJECTIONS[how]
    created, secret = await proxyable(app, caller, upstream, auth_type=auth_type, **proxy)
    # The caller's own credentials and hop-by-hop headers are not forwarded; its other headers are.
    sneaky = {"Cookie": "session=1", "Connection": "x-private", "X-Private": "p", "X-Custom": "kept"}
    if how == "api_key-header":
        sneaky["X-Api-Key"] = "the caller's own value"
    response = await app.post(
        f"{PROXY}/{created['id']}/v1/charges?a=1" + ("&key=mine" if how == "api_key-query" else ""),
        headers={**caller.headers, **sneaky, "X-Request-Id": "req-proxy-1"},
        content=b'{"amount": 100}',
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "method": "POST", "path": "/v1/charges"}
    assert response.headers["x-upstream"] == "yes"
    assert "x-hop" not in response.headers  # named in the upstream's Connection header
    [got] = upstream.received
    assert received_ok(secret, got)
    assert (got.method, got.raw_path, got.body) == ("POST", "/v1/charges", b'{"amount": 100}')
    assert got.headers["x-custom"] == "kept"
    assert got.headers["x-request-id"] == "req-proxy-1"
    assert caller.key not in str(got.headers)
    assert not {"cookie", "x-private", "x-workspace-id"} & set(got.headers)
    listed = await app.get(f"{API}/{created['id']}/usage", headers=caller.headers)  # the record is written by now
    assert listed.json()["total"] == 1
    dumped = str(await CredentialUsage.select()) + str(await Credential.select())
    for value in secret_values(secret):
        assert value not in response.text
        assert value not in str(response.headers)
        assert value not in caplog.text
        assert value not in dumped


async def test_the_usage_record_says_who_called_what_and_no_more(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    created, secret = await proxyable(app, caller, upstream, inject={"query": "key"})
    for i in range(3):
        response = await app.get(
            f"{PROXY}/{created['id']}/v1/customers/cus_{i}8f?email=a@b.c",
            headers={**caller.headers, "X-Request-Id": f"req-usage-{i}"},
        )
        assert response.status_code == 200

    page = await app.get(f"{API}/{created['id']}/usage?limit=2", headers=caller.headers)
    assert page.status_code == 200
    body = page.json()
    assert (body["total"], body["page"], body["size"], len(body["usage"])) == (3, 1, 2, 2)
    newest = body["usage"][0]
    assert {k: v for k, v in newest.items() if k not in {"id", "created_at", "duration_ms", "response_bytes"}} == {
        "actor_kind": "api_key",
        "actor_id": caller.key_id,
        "grant_id": None,
        "method": "GET",
        "host": "127.0.0.1",
        "path_template": "/v1/customers/{id}",
        "upstream_status": 200,
        "outcome": "ok",
        "request_bytes": 0,
        "request_id": "req-usage-2",
    }
    assert newest["response_bytes"] > 0
    assert secret["api_key"] not in page.text
    assert "a@b.c" not in page.text
    rest = (await app.get(f"{API}/{created['id']}/usage?skip=2&limit=2", headers=caller.headers)).json()
    assert [u["request_id"] for u in rest["usage"]] == ["req-usage-0"]
    credential = (await app.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    assert credential["last_used_at"] is not None


async def test_the_read_view_shows_the_proxy_settings_and_update_replaces_them(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    created, _ = await proxyable(app, caller, upstream, methods=["GET"], path_prefixes=["/v1/charges"])
    expected = {
        "base_url": upstream.url,
        "methods": ["GET"],
        "path_prefixes": ["/v1/charges"],
        "injection": {"kind": "bearer", "names": []},
        "check": None,
        "last_checked_at": None,
        "last_check_outcome": None,
        "last_check_status": None,
    }
    assert created["proxy"] == expected
    assert (await app.get(f"{API}/{created['id']}", headers=caller.headers)).json()["proxy"] == expected
    updated = await app.put(
        f"{API}/{created['id']}",
        json={"proxy": {"base_url": upstream.url + "/v2", "inject": {"header": "X-Key"}}},
        headers=caller.headers,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["proxy"]["base_url"] == upstream.url + "/v2"
    assert updated.json()["proxy"]["injection"] == {"kind": "header", "names": ["X-Key"]}
    plain = await create(app, caller)
    assert "proxy" not in plain


async def test_a_credential_without_proxy_settings_is_not_proxyable(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    plain = await create(app, caller)
    response = await app.get(f"{PROXY}/{plain['id']}/v1/x", headers=caller.headers)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "The credential has no proxy settings; set 'proxy' (base_url, methods, path_prefixes) to use it"},
    )
    assert upstream.received == []


@pytest.mark.parametrize(
    ("proxy", "loc", "msg"),
    [
        ({"base_url": "ftp://127.0.0.1"}, "base_url", "base_url must be an absolute https URL"),
        (
            {"base_url": "https://169.254.169.254"},
            "base_url",
            "base_url's host resolves to a cloud metadata address, which is not allowed",
        ),
        ({"base_url": "https://user:pw@api.example.com"}, "base_url", "base_url must not carry user information"),
        ({"base_url": "https://api.example.com/v1?x=1"}, "base_url", "base_url must not carry a query or a fragment"),
        (
            {"base_url": "https://api.example.com/a/../b"},
            "base_url",
            "base_url's path must be plain ('/v1', not encoded or dotted)",
        ),
    ],
    ids=["not-http", "metadata", "userinfo", "query", "dotted"],
)
async def test_proxy_settings_are_checked_when_written(
    app: httpx.AsyncClient, caller: Caller, proxy: dict[str, str], loc: str, msg: str
) -> None:
    response = await app.post(
        API,
        json={
            "label": "x",
            "auth_type": "api_key",
            "credential_scope": "workspace",
            "credentials": {"api_key": "k"},
            "proxy": proxy,
        },
        headers=caller.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "proxy", loc]
    assert response.json()["detail"][0]["msg"] == msg


async def test_public_addresses_only_unless_the_egress_rules_allow_loopback(
    client: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    """The session app keeps the default egress rules: a loopback base_url is refused at write time."""
    response = await client.post(
        API,
        json={
            "label": "x",
            "auth_type": "api_key",
            "credential_scope": "workspace",
            "credentials": {"api_key": "k"},
            "proxy": {"base_url": upstream.url},
        },
        headers=caller.headers,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "base_url must use https"


# --- escapes, methods and prefixes --------------------------------------------------------------------------------

ESCAPES = [
    "/v1/charges/%2e%2e/admin",
    "/v1/charges/%2E%2E/admin",
    "/v1/charges%2f..%2fadmin",
    "/v1/charges/%2fadmin",
    "/v1/charges/%5c..%5cadmin",
    "/v1/charges/%252e%252e/admin",
    "/v1/charges/..%00/admin",
    "//evil.example/v1/charges",
    "/v1/charges//evil.example",
    "/v1/charges/a\\..\\admin",
    "/https://evil.example/v1/charges",
    "/v1/charges/%zz",
]


@pytest.mark.parametrize("path", ESCAPES)
async def test_every_encoded_escape_is_refused_and_nothing_is_sent(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, path: str
) -> None:
    created, _ = await proxyable(app, caller, upstream, path_prefixes=["/v1/charges"])
    response = await app.get(f"{PROXY}/{created['id']}{path}", headers=caller.headers)
    assert response.status_code == 400, (path, response.status_code, response.text)
    assert upstream.received == []


async def test_methods_and_prefixes_outside_the_settings_are_forbidden(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    created, _ = await proxyable(app, caller, upstream, methods=["GET"], path_prefixes=["/v1/charges"])
    base = f"{PROXY}/{created['id']}"
    outside = await app.get(f"{base}/v1/chargesX", headers=caller.headers)
    assert (outside.status_code, outside.json()) == (
        403,
        {"detail": "The path is outside the credential's allowed path prefixes"},
    )
    method = await app.delete(f"{base}/v1/charges/ch_1", headers=caller.headers)
    assert (method.status_code, method.json()) == (
        403,
        {"detail": "The method DELETE is not among the credential's allowed proxy methods"},
    )
    assert (await app.get(f"{base}/v1/charges", headers=caller.headers)).status_code == 200
    assert [r.raw_path for r in upstream.received] == ["/v1/charges"]


async def test_usage_records_queued_at_shutdown_are_written(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, database_url: str, bao: BaoServer
) -> None:
    created, _ = await proxyable(app, caller, upstream)
    async with running_app(proxy_settings(database_url, bao)) as instance:
        for i in range(5):
            response = await instance.get(f"{PROXY}/{created['id']}/v1/call/{i}", headers=caller.headers)
            assert response.status_code == 200
    # Nobody listed them (a listing waits for the queue): the shutdown wrote what was queued.
    rows = await CredentialUsage.select(CredentialUsage.path_template, CredentialUsage.outcome).where(
        CredentialUsage.credential_id == created["id"]
    )
    assert sorted((row["path_template"], row["outcome"]) for row in rows) == [("/v1/call/{id}", "ok")] * 5
    read = (await app.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    assert read["last_used_at"] is not None


async def test_a_batch_with_a_record_that_cannot_be_written_keeps_the_others(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    created, _ = await proxyable(app, caller, upstream)
    record = {
        "credential_id": uuid.UUID(created["id"]),
        "workspace_id": caller.workspace,
        "actor_kind": "api_key",
        "actor_id": "k",
        "grant_id": None,
        "method": "GET",
        "host": "127.0.0.1",
        "path_template": "/v1/x",
        "upstream_status": 200,
        "outcome": "ok",
        "request_bytes": 0,
        "response_bytes": 2,
        "duration_ms": 1,
        "request_id": "req-batch",
    }
    gone = uuid.uuid4()  # a credential purged between the call and the write
    async with usage_writer() as writer:
        for credential_id in (record["credential_id"], gone, record["credential_id"]):
            await writer.put({**record, "credential_id": credential_id, "created_at": datetime.now(UTC)})
        await writer.flush()
        written = await CredentialUsage.count().where(CredentialUsage.request_id == "req-batch")
        assert written == 2
    assert f"usage not recorded for credential {gone} (ForeignKeyViolationError)" in caplog.text


# --- limits, timeouts, redirects ----------------------------------------------------------------------------------


async def test_oversize_bodies_both_ways(app: httpx.AsyncClient, caller: Caller, upstream: Upstream) -> None:
    created, _ = await proxyable(app, caller, upstream)
    base = f"{PROXY}/{created['id']}"
    too_big = await app.post(f"{base}/v1/upload", content=b"x" * 4096, headers=caller.headers)
    assert too_big.status_code == 413
    assert upstream.received == []
    huge = await app.get(f"{base}/big/file", headers=caller.headers)
    assert (huge.status_code, huge.json()) == (502, {"detail": "The upstream's answer exceeds 8192 bytes"})
    usage = (await app.get(f"{API}/{created['id']}/usage", headers=caller.headers)).json()["usage"]
    assert [(u["outcome"], u["upstream_status"]) for u in usage] == [("too_large", 200)]


async def test_a_slow_upstream_times_out_with_504_and_leaks_nothing(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    created, _ = await proxyable(app, caller, upstream)
    before_tasks = len(asyncio.all_tasks())
    response = await app.get(f"{PROXY}/{created['id']}/slow/report", headers=caller.headers)
    assert (response.status_code, response.json()) == (504, {"detail": "The upstream did not answer within 1 s"})
    # The connection the proxy gave up on is closed, not kept: the upstream sees it go.
    for _ in range(50):
        if upstream.open_connections == 0:
            break
        await asyncio.sleep(0.1)
    assert upstream.open_connections == 0
    assert len(asyncio.all_tasks()) <= before_tasks
    usage = (await app.get(f"{API}/{created['id']}/usage", headers=caller.headers)).json()["usage"]
    assert [(u["outcome"], u["upstream_status"]) for u in usage] == [("timeout", None)]


async def test_redirects_are_returned_not_followed(app: httpx.AsyncClient, caller: Caller, upstream: Upstream) -> None:
    created, _ = await proxyable(app, caller, upstream)
    response = await app.get(f"{PROXY}/{created['id']}/redirect/me", headers=caller.headers)
    assert response.status_code == 302
    assert response.headers["location"] == "https://elsewhere.example/landing"
    assert len(upstream.received) == 1


async def test_repeated_response_headers_pass_through_with_every_value(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    created, _ = await proxyable(app, caller, upstream)
    response = await app.get(f"{PROXY}/{created['id']}/cookies/set", headers=caller.headers)
    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == ["session=abc; Path=/; HttpOnly", "theme=dark; Path=/"]
    assert response.headers.get_list("link") == [
        '<https://upstream.example/page/2>; rel="next"',
        '<https://upstream.example/page/9>; rel="last"',
    ]
    assert response.headers.get_list("content-type") == ["application/json"]
    assert response.headers.get_list("content-length") == ["2"]
    assert response.content == b"{}"


async def test_an_upstreams_cookie_never_rides_along_on_a_later_call(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    first, _ = await proxyable(app, caller, upstream)
    second, _ = await proxyable(app, caller, upstream)
    assert (await app.get(f"{PROXY}/{first['id']}/cookies/set", headers=caller.headers)).status_code == 200
    assert (await app.get(f"{PROXY}/{second['id']}/v1/ping", headers=caller.headers)).status_code == 200
    assert (await app.get(f"{PROXY}/{first['id']}/v1/ping", headers=caller.headers)).status_code == 200
    assert [("cookie" in r.headers) for r in upstream.received] == [False, False, False]


ECHOES = {
    # how the secret is injected -> the Location the caller gets (the upstream echoed the query into it)
    "api_key-query": ({"inject": {"query": "key"}}, "/landing?a=1&key=REDACTED"),
    "api_key-bearer": ({}, "/landing?a=1"),
    "api_key-header": ({"inject": {"header": "X-Api-Key"}}, "/landing?a=1"),
}


@pytest.mark.parametrize("how", list(ECHOES))
async def test_an_upstream_that_echoes_the_request_never_shows_the_secret_in_a_header(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    settings, location = ECHOES[how]
    created, secret = await proxyable(app, caller, upstream, **settings)
    key = secret["api_key"]
    with caplog.at_level(logging.WARNING, logger="service.proxy"):
        response = await app.get(f"{PROXY}/{created['id']}/echo/me?a=1", headers=caller.headers)
    assert response.status_code == 302
    assert response.headers["location"] == upstream.url + location
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
    assert key not in headers
    assert quote(key, safe="") not in headers
    assert response.headers["x-kept"] == "plain"
    if how == "api_key-query":
        # The upstream did get the key in the query; what repeats it comes back redacted (URLs) or not at all.
        assert upstream.received[0].query == f"a=1&key={key}"
        assert response.headers["link"] == f'<{upstream.url}/next?a=1&key=REDACTED>; rel="next"'
        assert "x-echo-query" not in response.headers
        assert response.headers["x-echo-authorization"] == "-"
        dropped = ["x-echo-query"]
    elif how == "api_key-bearer":
        assert "x-echo-authorization" not in response.headers
        assert response.headers["x-echo-query"] == "a=1"
        dropped = ["x-echo-authorization"]
    else:
        assert response.headers["x-echo-authorization"] == "-"
        dropped = []
    warned = [r.getMessage() for r in caplog.records if r.name == "service.proxy"]
    assert warned == [f"proxy: the upstream's {name} header held the injected secret; not returned" for name in dropped]
    assert key not in caplog.text


@pytest.mark.parametrize("route", ["mirror", "mirror-stream"])
@pytest.mark.parametrize("how", list(INJECTIONS))
async def test_an_upstream_that_echoes_the_request_in_its_body_shows_the_secret_masked(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, how: str, route: str
) -> None:
    auth_type, proxy, received_ok = INJECTIONS[how]
    created, secret = await proxyable(app, caller, upstream, auth_type=auth_type, **proxy)
    response = await app.get(
        f"{PROXY}/{created['id']}/{route}/me?a=1",
        headers={**caller.headers, "Accept-Encoding": "gzip", "X-Request-Id": "req-mirror"},
    )
    assert response.status_code == 200, response.text
    [got] = upstream.received
    assert received_ok(secret, got)
    assert got.headers["accept-encoding"] == "identity"  # a body the proxy can read is one it can mask
    body = response.content
    for value in secret_values(secret):
        for form in (value, quote(value, safe="")):
            assert form.encode() not in body
    assert b"*" * 8 in body
    assert b"req-mirror" in body  # the rest of the echo is as the upstream sent it
    # Masked in place, one '*' per byte: a declared length still holds.
    assert len(body) == len(msgspec.json.encode({"headers": got.headers, "query": got.query}))
    if route == "mirror":
        assert int(response.headers["content-length"]) == len(body)


# --- the use permission -------------------------------------------------------------------------------------------


async def test_a_key_with_use_but_not_reveal_can_proxy_and_cannot_reveal(
    app: httpx.AsyncClient, make_caller: MakeCaller, upstream: Upstream
) -> None:
    owner = await make_caller(permissions=("read", "write", "reveal", "use"))
    created, _ = await proxyable(app, owner, upstream)
    user_only = await make_caller(owner.workspace, ("use",))
    used = await app.get(f"{PROXY}/{created['id']}/v1/balance", headers=user_only.headers)
    assert used.status_code == 200
    revealed = await app.post(f"{API}/{created['id']}/reveal", headers=user_only.headers)
    assert (revealed.status_code, revealed.json()) == (403, {"detail": "This API key lacks the 'reveal' permission"})
    reader = await make_caller(owner.workspace, ("read", "reveal"))
    refused = await app.get(f"{PROXY}/{created['id']}/v1/balance", headers=reader.headers)
    assert (refused.status_code, refused.json()) == (403, {"detail": "This API key lacks the 'use' permission"})
    assert len(upstream.received) == 1
    other_workspace = await make_caller(permissions=("use",))
    hidden = await app.get(f"{PROXY}/{created['id']}/v1/balance", headers=other_workspace.headers)
    assert (hidden.status_code, hidden.json()) == (404, {"detail": "Credential not found"})


async def test_head_and_options_pass_through(app: httpx.AsyncClient, caller: Caller, upstream: Upstream) -> None:
    created, _ = await proxyable(app, caller, upstream)
    head = await app.head(f"{PROXY}/{created['id']}/v1/ping", headers=caller.headers)
    assert (head.status_code, head.content) == (200, b"")
    options = await app.options(f"{PROXY}/{created['id']}/v1/ping", headers=caller.headers)
    assert options.status_code == 200
    assert [r.method for r in upstream.received] == ["HEAD", "OPTIONS"]
