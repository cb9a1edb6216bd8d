"""Grants for agents: a token that can use one credential through the proxy and nothing else; expiry, max_uses under
concurrency, narrower limits, revocation seen by a second instance; the Vault decrypt names the grant."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from devtools.stack import BaoServer
from service.auth.guard import GRANT_USE_ONLY
from service.config import Settings
from tests.support.api import API, Caller, MakeCaller, create
from tests.support.proxy import PROXY, proxy_settings, proxyable
from tests.support.servers import env_for, running_app, serving
from tests.support.upstream import Upstream


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(proxy_settings(database_url, bao, CREDENTIALS_GRANT_MAX_TTL="3600")) as proxy_client:
        yield proxy_client


@pytest.fixture
async def caller(make_caller: MakeCaller) -> Caller:
    return await make_caller(permissions=("read", "write", "reveal", "use"))


@pytest.fixture(scope="module")
def second_instance(settings: Settings) -> Iterator[str]:
    """``credctl serve`` in a process of its own on the same database and Vault, allowed to call loopback."""
    env = env_for(
        settings,
        CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true",
        CREDENTIALS_DB_POOL_MIN="1",
        CREDENTIALS_DB_POOL_MAX="4",
        CREDENTIALS_OAUTH_PROACTIVE_INTERVAL="0",
        CREDENTIALS_PROXY_MAX_RESPONSE_BYTES="8192",
    )
    with serving(env) as server:
        yield server.url


async def grant(app: httpx.AsyncClient, caller: Caller, cid: str, **body: Any) -> dict[str, Any]:
    response = await app.post(f"{API}/{cid}/grants", json=body, headers=caller.headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_grant_uses_its_credential_and_can_do_nothing_else(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, bao: BaoServer
) -> None:
    created, secret = await proxyable(app, caller, upstream)
    other, _ = await proxyable(app, caller, upstream)
    made = await grant(app, caller, created["id"], label="agent run 7")
    assert made["token"].startswith("cg_")
    assert {k: made[k] for k in ("label", "uses", "max_uses", "status", "methods", "path_prefixes")} == {
        "label": "agent run 7",
        "uses": 0,
        "max_uses": None,
        "status": "active",
        "methods": None,
        "path_prefixes": None,
    }
    token = made["token"]

    used = await app.get(
        f"{PROXY}/{created['id']}/v1/balance", headers={**bearer(token), "X-Request-Id": "req-grant-use-1"}
    )
    assert used.status_code == 200, used.text
    assert upstream.received[0].headers["authorization"] == f"Bearer {secret['api_key']}"
    assert token not in str(upstream.received[0].headers)

    # It may use the secret, never see it: its credential's reveal answers 403, another's 401.
    revealed = await app.post(f"{API}/{created['id']}/reveal", headers=bearer(token))
    assert (revealed.status_code, revealed.json()) == (403, {"detail": GRANT_USE_ONLY})
    assert "www-authenticate" not in revealed.headers
    assert secret["api_key"] not in revealed.text
    other_reveal = await app.post(f"{API}/{other['id']}/reveal", headers=bearer(token))
    assert (other_reveal.status_code, other_reveal.json()) == (401, {"detail": "Invalid grant"})
    # Everywhere else the token is nothing: 401, as an unknown API key.
    invalid_key = (401, {"detail": "Invalid API key"})
    for method, path in [
        ("GET", f"{API}/{created['id']}"),
        ("GET", API),
        ("GET", f"{API}/{created['id']}/usage"),
        ("POST", f"{API}/{created['id']}/grants"),
    ]:
        response = await app.request(method, path, headers=bearer(token), json={} if method == "POST" else None)
        assert (response.status_code, response.json()) == invalid_key, path
    elsewhere = await app.get(f"{PROXY}/{other['id']}/v1/balance", headers=bearer(token))
    assert (elsewhere.status_code, elsewhere.json()) == (401, {"detail": "Invalid grant"})
    assert elsewhere.headers["www-authenticate"] == "Bearer"
    assert len(upstream.received) == 1

    # The usage record and Vault's audit log name the grant as the actor of the decrypt.
    usage = (await app.get(f"{API}/{created['id']}/usage", headers=caller.headers)).json()["usage"]
    assert [(u["actor_kind"], u["actor_id"], u["grant_id"]) for u in usage] == [
        ("grant", f"grant:{made['id']}", made["id"])
    ]
    entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
    traced = [e for e in entries if e["request"].get("headers", {}).get("x-request-id") == ["req-grant-use-1"]]
    assert traced
    assert {tuple(e["request"]["headers"]["x-credentials-actor"]) for e in traced} == {(f"grant:{made['id']}",)}
    assert any("transit/decrypt" in e["request"]["path"] for e in traced)
    listed = (await app.get(f"{API}/{created['id']}/grants", headers=caller.headers)).json()
    assert [(g["id"], g["uses"], g["status"]) for g in listed["grants"]] == [(made["id"], 1, "active")]
    assert "token" not in listed["grants"][0]
    assert made["token"] not in json.dumps(listed)


async def test_a_grant_narrows_methods_and_paths_and_refusals_cost_no_use(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    created, _ = await proxyable(app, caller, upstream, path_prefixes=["/v1"])
    made = await grant(app, caller, created["id"], methods=["GET"], path_prefixes=["/v1/charges"], max_uses=3)
    base, headers = f"{PROXY}/{created['id']}", bearer(made["token"])
    post = await app.post(f"{base}/v1/charges", headers=headers, content=b"{}")
    assert (post.status_code, post.json()) == (
        403,
        {"detail": "The method POST is not among the grant's allowed methods"},
    )
    outside = await app.get(f"{base}/v1/customers", headers=headers)
    assert (outside.status_code, outside.json()) == (
        403,
        {"detail": "The path is outside the grant's allowed path prefixes"},
    )
    assert (await app.get(f"{base}/v1/charges/ch_1", headers=headers)).status_code == 200
    listed = (await app.get(f"{API}/{created['id']}/grants", headers=caller.headers)).json()["grants"]
    assert listed[0]["uses"] == 1


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"ttl_seconds": 3601},
            422,
            [
                {
                    "loc": ["body", "ttl_seconds"],
                    "msg": "Input should be less than or equal to 3600",
                    "type": "less_than_equal",
                }
            ],
        ),
        (
            {"methods": ["DELETE"]},
            422,
            [
                {
                    "loc": ["body", "methods", 0],
                    "msg": "DELETE is not among the credential's proxy methods",
                    "type": "not_narrower",
                }
            ],
        ),
        (
            {"path_prefixes": ["/v2"]},
            422,
            [
                {
                    "loc": ["body", "path_prefixes", 0],
                    "msg": "The prefix is outside the credential's path prefixes",
                    "type": "not_narrower",
                }
            ],
        ),
    ],
    ids=["ttl-over-max", "wider-method", "wider-prefix"],
)
async def test_a_grant_is_never_wider_than_its_credential(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, body: dict[str, Any], status: int, detail: Any
) -> None:
    created, _ = await proxyable(app, caller, upstream, methods=["GET"], path_prefixes=["/v1"])
    response = await app.post(f"{API}/{created['id']}/grants", json=body, headers=caller.headers)
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_grants_need_use_and_a_proxyable_credential(
    app: httpx.AsyncClient, caller: Caller, make_caller: MakeCaller
) -> None:
    plain = await create(app, caller)
    refused = await app.post(f"{API}/{plain['id']}/grants", json={}, headers=caller.headers)
    assert (refused.status_code, refused.json()["detail"]) == (
        409,
        "The credential has no proxy settings; set 'proxy' (base_url, methods, path_prefixes) to use it",
    )
    revealer = await make_caller(caller.workspace, ("read", "reveal"))
    forbidden = await app.post(f"{API}/{plain['id']}/grants", json={}, headers=revealer.headers)
    assert (forbidden.status_code, forbidden.json()) == (403, {"detail": "This API key lacks the 'use' permission"})


async def test_a_grant_stops_at_its_expiry(app: httpx.AsyncClient, caller: Caller, upstream: Upstream) -> None:
    created, _ = await proxyable(app, caller, upstream)
    made = await grant(app, caller, created["id"], ttl_seconds=1)
    url = f"{PROXY}/{created['id']}/v1/x"
    assert (await app.get(url, headers=bearer(made["token"]))).status_code == 200
    await asyncio.sleep(1.2)
    expired = await app.get(url, headers=bearer(made["token"]))
    assert (expired.status_code, expired.json()) == (401, {"detail": "Invalid grant"})
    listed = (await app.get(f"{API}/{created['id']}/grants", headers=caller.headers)).json()["grants"]
    assert listed[0]["status"] == "expired"
    assert len(upstream.received) == 1


async def test_concurrent_uses_on_two_instances_never_exceed_max_uses(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, second_instance: str
) -> None:
    created, _ = await proxyable(app, caller, upstream)
    made = await grant(app, caller, created["id"], max_uses=5)
    path = f"{PROXY}/{created['id']}/v1/x"
    async with httpx.AsyncClient(base_url=second_instance, timeout=30) as other:
        responses = await asyncio.gather(
            *(app.get(path, headers=bearer(made["token"])) for _ in range(10)),
            *(other.get(path, headers=bearer(made["token"])) for _ in range(10)),
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [401] * 15
    assert {r.json()["detail"] for r in responses if r.status_code == 401} <= {
        "Invalid grant",
        "The grant is expired, revoked or used up",
    }
    assert len(upstream.received) == 5
    listed = (await app.get(f"{API}/{created['id']}/grants", headers=caller.headers)).json()["grants"]
    assert (listed[0]["uses"], listed[0]["status"]) == (5, "used_up")


async def test_a_revocation_is_seen_by_another_instance_at_once(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, second_instance: str
) -> None:
    created, _ = await proxyable(app, caller, upstream)
    made = await grant(app, caller, created["id"])
    path = f"{PROXY}/{created['id']}/v1/x"
    async with httpx.AsyncClient(base_url=second_instance, timeout=30) as other:
        assert (await other.get(path, headers=bearer(made["token"]))).status_code == 200
        revoked = await app.delete(f"{API}/{created['id']}/grants/{made['id']}", headers=caller.headers)
        revoked_at = time.monotonic()
        assert (revoked.status_code, revoked.json()["status"]) == (200, "revoked")
        refused = await other.get(path, headers=bearer(made["token"]))
        seen_after = time.monotonic() - revoked_at
    assert (refused.status_code, refused.json()) == (401, {"detail": "Invalid grant"})
    assert seen_after < 1.0
    assert len(upstream.received) == 1
    missing = await app.delete(f"{API}/{created['id']}/grants/{uuid.uuid4()}", headers=caller.headers)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Grant not found"})


async def raw_get(base_url: str, target: str, headers: dict[str, str]) -> int:
    """One HTTP/1.1 request with ``target`` sent byte for byte (httpx would normalize dot segments away)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.mark.parametrize("path", ["/v1/charges/../admin", "/v1/charges/./x", "/v1/charges/..", "/v1/./charges"])
async def test_literal_dot_segments_are_refused_by_a_real_server(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, second_instance: str, path: str
) -> None:
    created, _ = await proxyable(app, caller, upstream, path_prefixes=["/v1/charges"])
    status = await raw_get(second_instance, f"{PROXY}/{created['id']}{path}", caller.headers)
    assert status == 400
    assert upstream.received == []


async def test_an_answer_that_grows_past_the_limit_while_streaming_is_cut(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, second_instance: str
) -> None:
    """No Content-Length: the status is already sent when the size shows, so the stream is cut short (the client
    sees an incomplete response, never a complete-looking one) and the call is recorded as too large."""
    created, _ = await proxyable(app, caller, upstream)
    async with httpx.AsyncClient(base_url=second_instance, timeout=30) as other:
        with pytest.raises(httpx.RemoteProtocolError):
            await other.get(f"{PROXY}/{created['id']}/stream/file", headers=caller.headers)
    for _ in range(50):
        usage = (await app.get(f"{API}/{created['id']}/usage", headers=caller.headers)).json()["usage"]
        if usage:
            break
        await asyncio.sleep(0.1)
    assert [(u["outcome"], u["upstream_status"]) for u in usage] == [("too_large", 200)]
    assert usage[0]["response_bytes"] > 8192
