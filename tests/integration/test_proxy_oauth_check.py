"""The proxy with OAuth credentials (refresh before use, one refresh and one retry on an upstream 401) and provider
checks (``POST .../check``, ``credctl check --due``, the service's own job on two instances)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from devtools.stack import BaoServer
from service.config import Settings
from service.proxy.check import check_due
from service.services import Services
from tests.support.api import API, Caller, MakeCaller, create
from tests.support.oauth import TokenEndpoint, oauth_secret
from tests.support.proxy import PROXY, proxy_settings, proxyable
from tests.support.servers import credctl, env_for, running_app
from tests.support.upstream import Upstream


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(proxy_settings(database_url, bao, CREDENTIALS_PROXY_TIMEOUT="5")) as proxy_client:
        yield proxy_client


class LiveTokens(set[str]):
    """The upstream accepts exactly the access tokens the token endpoint has issued (read at each request)."""

    def __init__(self, endpoint: TokenEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    def __contains__(self, token: object) -> bool:
        return token in self.endpoint.issued_access


@pytest.fixture
async def caller(make_caller: MakeCaller) -> Caller:
    return await make_caller(permissions=("read", "write", "reveal", "use"))


async def test_an_upstream_401_makes_one_refresh_and_one_retry_under_20_concurrent_calls(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, endpoint: TokenEndpoint
) -> None:
    secret = oauth_secret(endpoint, expires_at=None)  # not due: only the upstream's 401 says the token is stale
    created = await create(
        app,
        caller,
        auth_type="oauth_token_refresh_rotation",
        credentials=secret,
        proxy={"base_url": upstream.url, "path_prefixes": ["/oauth"]},
    )
    endpoint.delay = 0.2
    upstream.valid_tokens = LiveTokens(endpoint)
    responses = await asyncio.gather(
        *(app.get(f"{PROXY}/{created['id']}/oauth/me", headers=caller.headers) for _ in range(20))
    )

    assert [r.status_code for r in responses] == [200] * 20
    assert endpoint.calls == 1
    [fresh] = endpoint.issued_access
    stale = [r for r in upstream.received if r.headers["authorization"] == f"Bearer {secret['access_token']}"]
    retried = [r for r in upstream.received if r.headers["authorization"] == f"Bearer {fresh}"]
    assert (len(stale), len(retried)) == (20, 20)  # every call: one try, one retry, never more


async def test_a_due_token_is_refreshed_before_use_and_a_post_is_not_retried(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, endpoint: TokenEndpoint
) -> None:
    created = await create(
        app,
        caller,
        auth_type="oauth_token_refresh_rotation",
        credentials=oauth_secret(endpoint),  # expired: refreshed before the call
        proxy={"base_url": upstream.url, "path_prefixes": ["/oauth"]},
    )
    upstream.valid_tokens = LiveTokens(endpoint)
    response = await app.get(f"{PROXY}/{created['id']}/oauth/me", headers=caller.headers)
    assert response.status_code == 200
    assert endpoint.calls == 1
    [fresh] = endpoint.issued_access
    assert [r.headers["authorization"] for r in upstream.received] == [f"Bearer {fresh}"]
    # A POST is not idempotent: an upstream 401 is returned as it is, with no refresh and no retry.
    upstream.reset()
    upstream.valid_tokens = set()
    post = await app.post(f"{PROXY}/{created['id']}/oauth/me", headers=caller.headers, content=b"{}")
    assert post.status_code == 401
    assert endpoint.calls == 1
    assert len(upstream.received) == 1


async def test_a_provider_check_records_its_outcome_and_a_401_sets_error(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream
) -> None:
    good, _ = await proxyable(app, caller, upstream, check={"path": "/v1/balance"})
    checked = await app.post(f"{API}/{good['id']}/check", headers=caller.headers)
    assert checked.status_code == 200, checked.text
    body = checked.json()
    assert {k: body[k] for k in ("outcome", "upstream_status", "credential_status")} == {
        "outcome": "ok",
        "upstream_status": 200,
        "credential_status": "active",
    }
    proxy = (await app.get(f"{API}/{good['id']}", headers=caller.headers)).json()["proxy"]
    assert (proxy["last_check_outcome"], proxy["last_check_status"]) == ("ok", 200)
    assert proxy["last_checked_at"] == body["checked_at"]

    bad, _ = await proxyable(app, caller, upstream, check={"path": "/status/401"})
    rejected = (await app.post(f"{API}/{bad['id']}/check", headers=caller.headers)).json()
    assert (rejected["outcome"], rejected["credential_status"]) == ("rejected", "error")
    read = (await app.get(f"{API}/{bad['id']}", headers=caller.headers)).json()
    assert (read["status"], read["status_reason"]) == ("error", "provider check: the upstream answered HTTP 401")
    used = await app.get(f"{PROXY}/{bad['id']}/v1/x", headers=caller.headers)
    assert (used.status_code, used.json()) == (
        409,
        {"detail": "The credential is in error: provider check: the upstream answered HTTP 401"},
    )
    unchecked, _ = await proxyable(app, caller, upstream)
    none = await app.post(f"{API}/{unchecked['id']}/check", headers=caller.headers)
    assert none.status_code == 409


async def test_credctl_check_due_runs_the_checks_that_are_due(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, settings: Settings
) -> None:
    due, _ = await proxyable(app, caller, upstream, check={"path": "/v1/ping"})
    fresh, _ = await proxyable(app, caller, upstream, check={"path": "/v1/ping"})
    assert (await app.post(f"{API}/{fresh['id']}/check", headers=caller.headers)).status_code == 200
    upstream.reset()
    env = env_for(settings, CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true")
    ran = await asyncio.to_thread(credctl, "check", "--due", "--older-than", "600", env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "1 due: 1 ok; 0 could not run"
    assert [r.raw_path for r in upstream.received] == ["/v1/ping"]
    proxy = (await app.get(f"{API}/{due['id']}", headers=caller.headers)).json()["proxy"]
    assert proxy["last_check_outcome"] == "ok"


async def test_the_service_runs_due_checks_on_its_interval_and_a_401_sets_error(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, database_url: str, bao: BaoServer
) -> None:
    good, _ = await proxyable(app, caller, upstream, check={"path": "/v1/ping"})
    bad, _ = await proxyable(app, caller, upstream, check={"path": "/status/401"})
    # Two instances with the job on: a round every 1 s (+-50%); never checked, both credentials are due at once.
    every_2s = proxy_settings(database_url, bao, CREDENTIALS_CHECK_INTERVAL="2")
    async with running_app(every_2s), running_app(every_2s):
        deadline = time.monotonic() + 10
        while True:
            reads: list[dict[str, Any]] = [
                (await app.get(f"{API}/{c['id']}", headers=caller.headers)).json() for c in (good, bad)
            ]
            if all(read["proxy"]["last_check_outcome"] is not None for read in reads):
                break
            assert time.monotonic() < deadline, f"no check recorded within 10 s: {reads}"
            await asyncio.sleep(0.05)
        received = sorted(r.raw_path for r in upstream.received)
    # One check each (the next is due 2 s after the first): the instances never ran one twice.
    assert received == ["/status/401", "/v1/ping"]
    checked, rejected = reads
    assert (checked["proxy"]["last_check_outcome"], checked["proxy"]["last_check_status"]) == ("ok", 200)
    assert checked["proxy"]["last_checked_at"] is not None
    assert checked["status"] == "active"
    assert (rejected["proxy"]["last_check_outcome"], rejected["proxy"]["last_check_status"]) == ("rejected", 401)
    assert (rejected["status"], rejected["status_reason"]) == (
        "error",
        "provider check: the upstream answered HTTP 401",
    )


async def test_instances_running_due_checks_at_the_same_time_run_each_check_once(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, database_url: str, bao: BaoServer
) -> None:
    paths = [f"/v1/ping/{i}" for i in range(6)]
    made = [(await proxyable(app, caller, upstream, check={"path": path}))[0] for path in paths]
    settings = proxy_settings(database_url, bao)
    async with (
        Services.from_settings(settings, one_off=True) as one,
        Services.from_settings(settings, one_off=True) as two,
    ):
        # Both find the same six due; each check is claimed by one of them.
        reports = await asyncio.gather(
            check_due(one.checks, timedelta(hours=1)), check_due(two.checks, timedelta(hours=1))
        )
    assert sorted(r.raw_path for r in upstream.received) == paths
    assert sum(report.due for report in reports) == 6
    assert [report.failed for report in reports] == [[], []]
    assert sum(report.outcomes.get("ok", 0) for report in reports) == 6
    for created in made:
        proxy = (await app.get(f"{API}/{created['id']}", headers=caller.headers)).json()["proxy"]
        assert (proxy["last_check_outcome"], proxy["last_check_status"]) == ("ok", 200)
