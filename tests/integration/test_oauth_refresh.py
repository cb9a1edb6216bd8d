"""OAuth token refresh against a real token endpoint: single flight (one process, two processes), rotation,
failures (invalid_grant, 5xx, timeouts), proactive refresh, and the egress rules on ``token_url``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from db.tables import Credential
from devtools.stack import BaoServer
from service.auth.principal import Permission, Principal
from service.config import Settings
from service.context import RequestContext
from service.credentials.service import CredentialService
from service.oauth.client import ClientPolicy, TokenClient
from service.oauth.egress import EgressRules
from tests.support.api import API, Caller, new_credential
from tests.support.oauth import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenEndpoint,
    create_oauth,
    oauth_secret,
    oauth_settings,
    reveal,
    stored,
)
from tests.support.servers import credctl, env_for, running_app, serving
from vault.store import SecretStore


async def versions(client: httpx.AsyncClient, caller: Caller, cid: str) -> list[tuple[int, str]]:
    listed = (await client.get(f"{API}/{cid}/versions", headers=caller.headers)).json()["versions"]
    return [(v["version"], v["reason"]) for v in listed]


# --- single flight ------------------------------------------------------------------------------------------------


async def test_fifty_concurrent_reveals_of_an_expired_rotating_credential_make_one_refresh(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    secret = oauth_secret(endpoint)
    created = await create_oauth(app, caller, secret)
    endpoint.delay = 0.2  # keep the refresh in flight while the other callers arrive

    started = time.perf_counter()
    responses = await asyncio.gather(*(reveal(app, caller, created["id"]) for _ in range(50)))
    elapsed = time.perf_counter() - started

    assert [r.status_code for r in responses] == [200] * 50
    tokens = {r.json()["credentials"]["access_token"] for r in responses}
    assert endpoint.calls == 1
    assert tokens == set(endpoint.issued_access)
    assert len(tokens) == 1
    current = (await stored(app, caller, created["id"]))["credentials"]
    assert current["refresh_token"] in endpoint.valid_refresh
    assert current["refresh_token"] != secret["refresh_token"]
    assert await versions(app, caller, created["id"]) == [(2, "refresh"), (1, "create")]
    print(
        f"\n[race, one instance] token endpoint calls: {endpoint.calls}; callers served: 50; wall time: {elapsed:.3f} s"
    )


@pytest.fixture
def second_instance(app: httpx.AsyncClient, settings: Settings) -> Iterator[str]:
    """``credctl serve`` in a process of its own, on the same database and Vault, allowed to call loopback."""
    env = env_for(settings, CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true", CREDENTIALS_OAUTH_PROACTIVE_INTERVAL="0")
    with serving(env) as server:
        yield server.url


@pytest.mark.e2e
async def test_two_instances_on_one_database_make_one_refresh(
    app: httpx.AsyncClient, second_instance: str, caller: Caller, endpoint: TokenEndpoint
) -> None:
    secret = oauth_secret(endpoint)
    created = await create_oauth(app, caller, secret)
    endpoint.delay = 0.3

    async with httpx.AsyncClient(base_url=second_instance, timeout=30) as other:
        started = time.perf_counter()
        responses = await asyncio.gather(*(reveal(app if i % 2 else other, caller, created["id"]) for i in range(50)))
        elapsed = time.perf_counter() - started

    assert [r.status_code for r in responses] == [200] * 50
    assert endpoint.calls == 1
    assert {r.json()["credentials"]["access_token"] for r in responses} == set(endpoint.issued_access)
    current = (await stored(app, caller, created["id"]))["credentials"]
    assert current["refresh_token"] in endpoint.valid_refresh
    assert await versions(app, caller, created["id"]) == [(2, "refresh"), (1, "create")]
    print(
        f"\n[race, two instances] token endpoint calls: {endpoint.calls}; callers served: 50 (25 per instance); "
        f"wall time: {elapsed:.3f} s"
    )


async def test_the_row_lock_alone_keeps_fifty_service_objects_to_one_refresh(
    app: httpx.AsyncClient, bao: BaoServer, caller: Caller, endpoint: TokenEndpoint
) -> None:
    """No in-process sharing at all: 50 ``CredentialService`` objects, as 50 instances would be, on one database."""
    created = await create_oauth(app, caller, oauth_secret(endpoint))
    endpoint.delay = 0.2
    store = SecretStore.connect(bao.addr, bao.token, workers=8, timeout=10)
    principal = Principal(workspace_id=caller.workspace, actor_id="test", permissions=frozenset({Permission.reveal}))
    policy = ClientPolicy(timeout=5.0, egress=EgressRules(allow_loopback=True))
    try:
        services = [CredentialService(store, oauth=TokenClient(policy)) for _ in range(50)]
        started = time.perf_counter()
        revealed = await asyncio.gather(
            *(s.reveal(RequestContext(f"req-{i}", principal), created["id"]) for i, s in enumerate(services))
        )
        elapsed = time.perf_counter() - started
    finally:
        await store.aclose()

    assert endpoint.calls == 1
    assert {r.credentials["access_token"] for r in revealed} == set(endpoint.issued_access)
    assert {r.version for r in revealed} == {2}
    print(
        f"\n[race, 50 service objects] token endpoint calls: {endpoint.calls}; callers served: 50; wall time: {elapsed:.3f} s"
    )


async def test_a_fresh_token_is_revealed_without_calling_the_provider(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    secret = oauth_secret(endpoint, expires_at=in_an_hour)
    created = await create_oauth(app, caller, secret)

    assert (await stored(app, caller, created["id"]))["credentials"] == secret
    assert endpoint.calls == 0


async def test_a_token_within_the_skew_is_refreshed_first(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()  # the default skew is 60 s
    created = await create_oauth(app, caller, oauth_secret(endpoint, expires_at=soon), auth_type="oauth_token_refresh")

    revealed = await stored(app, caller, created["id"])

    assert (endpoint.calls, revealed["version"]) == (1, 2)
    assert revealed["credentials"]["access_token"] == endpoint.issued_access[0]
    expires_at = datetime.fromisoformat(revealed["credentials"]["expires_at"])
    assert timedelta(minutes=59) < expires_at - datetime.now(UTC) <= timedelta(hours=1)


# --- POST /refresh -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_refresh_answers_metadata_and_records_a_version(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    secret = oauth_secret(endpoint, expires_at=in_an_hour, token_endpoint_auth_method=method, scope="read write")
    created = await create_oauth(app, caller, secret, auth_type="oauth_token_refresh")
    created_etag = (await app.get(f"{API}/{created['id']}", headers=caller.headers)).headers["ETag"]
    caplog.set_level(logging.DEBUG)

    response = await app.post(f"{API}/{created['id']}/refresh", headers=caller.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == set(created)  # metadata only: no tokens
    assert "credentials" not in body
    assert response.headers["ETag"] != created_etag
    assert (endpoint.calls, endpoint.auth_methods) == (1, [method])
    assert await versions(app, caller, created["id"]) == [(2, "refresh"), (1, "create")]
    current = (await stored(app, caller, created["id"]))["credentials"]
    assert current["access_token"] == endpoint.issued_access[0]
    assert body["expires_at"] == current["expires_at"].replace("+00:00", "Z")
    assert {k: current[k] for k in ("token_url", "client_id", "client_secret", "scope")} == {
        k: secret[k] for k in ("token_url", "client_id", "client_secret", "scope")
    }
    for token in (current["access_token"], current["refresh_token"], secret["refresh_token"], CLIENT_SECRET):
        assert token not in caplog.text


async def test_refresh_needs_the_write_permission_and_a_refreshable_type(
    app: httpx.AsyncClient, caller: Caller, make_caller: Any, endpoint: TokenEndpoint
) -> None:
    created = await create_oauth(app, caller, oauth_secret(endpoint))
    reader = await make_caller(caller.workspace, ("read", "reveal"))
    api_key = await create_oauth(app, caller, {"api_key": "sk_live_x"}, auth_type="api_key")

    forbidden = await app.post(f"{API}/{created['id']}/refresh", headers=reader.headers)
    not_refreshable = await app.post(f"{API}/{api_key['id']}/refresh", headers=caller.headers)

    assert (forbidden.status_code, forbidden.json()) == (403, {"detail": "This API key lacks the 'write' permission"})
    assert (not_refreshable.status_code, not_refreshable.json()) == (
        409,
        {"detail": "Credentials of auth_type 'api_key' have no refresh token to refresh"},
    )
    assert endpoint.calls == 0


# --- failures ------------------------------------------------------------------------------------------------------


async def test_invalid_grant_sets_error_and_stops_calling_the_provider(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    secret = oauth_secret(endpoint)
    created = await create_oauth(app, caller, secret)
    endpoint.valid_refresh.clear()  # the provider revoked the grant

    first = await reveal(app, caller, created["id"])
    again = await reveal(app, caller, created["id"])
    forced = await app.post(f"{API}/{created['id']}/refresh", headers=caller.headers)

    reason = "the provider rejected the refresh: invalid_grant (HTTP 400)"
    assert (first.status_code, first.json()) == (409, {"detail": f"The credential is in error: {reason}"})
    assert (again.status_code, again.json()) == (409, {"detail": f"The credential is in error: {reason}"})
    assert forced.status_code == 409
    assert endpoint.calls == 1
    meta = (await app.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    assert (meta["status"], meta["status_reason"]) == ("error", reason)

    # Re-authorized: new credentials end the error, and the next reveal refreshes with them.
    updated = await app.put(
        f"{API}/{created['id']}", json={"credentials": oauth_secret(endpoint)}, headers=caller.headers
    )
    assert (updated.status_code, updated.json()["status"]) == (200, "expired")
    revealed = await stored(app, caller, created["id"])
    assert (revealed["credentials"]["access_token"], endpoint.calls) == (endpoint.issued_access[0], 2)


async def test_a_rotating_credential_without_a_new_refresh_token_is_an_error(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    created = await create_oauth(app, caller, oauth_secret(endpoint))
    endpoint.mode = "no_new_refresh_token"

    response = await reveal(app, caller, created["id"])

    assert (response.status_code, response.json()) == (
        409,
        {"detail": "The credential is in error: the provider returned no new refresh_token for a rotating credential"},
    )
    assert await versions(app, caller, created["id"]) == [(1, "create")]


async def test_a_non_rotating_credential_keeps_its_refresh_token_when_none_is_returned(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    secret = oauth_secret(endpoint)
    created = await create_oauth(app, caller, secret, auth_type="oauth_token_refresh")
    endpoint.mode = "no_new_refresh_token"

    revealed = await stored(app, caller, created["id"])

    assert revealed["credentials"]["refresh_token"] == secret["refresh_token"]
    assert revealed["credentials"]["access_token"] == endpoint.issued_access[0]


async def test_a_provider_503_is_retried_then_answers_502_without_changing_status(
    app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    secret = oauth_secret(endpoint)
    created = await create_oauth(app, caller, secret)
    endpoint.mode = "unavailable"

    response = await reveal(app, caller, created["id"])

    assert (response.status_code, response.json()) == (
        502,
        {"detail": "Token refresh failed after 3 attempt(s): the token endpoint answered HTTP 503"},
    )
    assert endpoint.calls == 3
    meta = (await app.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    assert (meta["status"], meta["status_reason"]) == ("expired", None)
    assert await versions(app, caller, created["id"]) == [(1, "create")]

    endpoint.mode = "ok"  # the provider is back: the same refresh token still works
    assert (await stored(app, caller, created["id"]))["credentials"]["access_token"] == endpoint.issued_access[0]


async def test_a_slow_provider_hits_the_timeout(
    client: httpx.AsyncClient, database_url: str, bao: BaoServer, caller: Caller, endpoint: TokenEndpoint
) -> None:
    settings = oauth_settings(database_url, bao, CREDENTIALS_OAUTH_TIMEOUT="0.3", CREDENTIALS_OAUTH_MAX_ATTEMPTS="2")
    async with running_app(settings) as app:
        created = await create_oauth(app, caller, oauth_secret(endpoint))
        endpoint.delay = 3.0  # without the deadline, each of the 2 calls would take 3 s

        started = time.perf_counter()
        response = await reveal(app, caller, created["id"])
        elapsed = time.perf_counter() - started

    assert (response.status_code, response.json()) == (
        502,
        {"detail": "Token refresh failed after 2 attempt(s): the token endpoint did not answer within 0.3 s"},
    )
    assert endpoint.calls == 2
    assert elapsed < 2.5


async def test_the_egress_rules_are_checked_again_at_refresh_time(
    client: httpx.AsyncClient, app: httpx.AsyncClient, caller: Caller, endpoint: TokenEndpoint
) -> None:
    created = await create_oauth(app, caller, oauth_secret(endpoint))

    # The session's app runs with the default rules: loopback (and plain http) refused.
    response = await reveal(client, caller, created["id"])

    assert (response.status_code, response.json()) == (
        502,
        {"detail": "Token refresh refused: token_url must use https"},
    )
    assert endpoint.calls == 0


# --- proactive refresh ---------------------------------------------------------------------------------------------


async def test_refresh_due_picks_up_only_what_is_due(
    app: httpx.AsyncClient, settings: Settings, caller: Caller, endpoint: TokenEndpoint
) -> None:
    now = datetime.now(UTC)
    due = await create_oauth(app, caller, oauth_secret(endpoint, expires_at=(now + timedelta(seconds=120)).isoformat()))
    later = await create_oauth(app, caller, oauth_secret(endpoint, expires_at=(now + timedelta(hours=2)).isoformat()))
    no_expiry = await create_oauth(app, caller, oauth_secret(endpoint, expires_at=None))
    disabled = await create_oauth(
        app, caller, oauth_secret(endpoint, expires_at=(now + timedelta(seconds=60)).isoformat())
    )
    await app.post(f"{API}/{disabled['id']}/disable", headers=caller.headers)
    not_oauth = await create_oauth(
        app, caller, {"access_token": "at_x", "expires_at": (now + timedelta(seconds=60)).isoformat()}, "oauth_token"
    )

    result = await asyncio.to_thread(
        credctl, "refresh-due", "--window", "300", env=env_for(settings, CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true")
    )

    assert (result.returncode, result.stdout.strip()) == (
        0,
        "1 due: 1 refreshed, 0 skipped (already fresh, disabled or gone), 0 failed",
    ), result.stderr
    assert endpoint.calls == 1
    assert await versions(app, caller, due["id"]) == [(2, "refresh"), (1, "create")]
    for other in (later, no_expiry, disabled, not_oauth):
        assert await versions(app, caller, other["id"]) == [(1, "create")]
    refreshed = await app.get(f"{API}/{due['id']}", headers=caller.headers)
    assert datetime.fromisoformat(refreshed.json()["expires_at"]) > now + timedelta(minutes=59)


async def test_the_service_refreshes_due_tokens_in_the_background(
    client: httpx.AsyncClient, database_url: str, bao: BaoServer, caller: Caller, endpoint: TokenEndpoint
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=90)).isoformat()
    settings = oauth_settings(database_url, bao, CREDENTIALS_OAUTH_PROACTIVE_INTERVAL="1")
    async with running_app(settings) as app:
        created = await create_oauth(app, caller, oauth_secret(endpoint, expires_at=soon))

        deadline = time.monotonic() + 10
        while endpoint.calls == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # later passes find it fresh and leave it alone

        assert endpoint.calls == 1
        assert (await versions(app, caller, created["id"]))[0] == (2, "refresh")


# --- egress rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_url", "msg"),
    [
        ("https://10.0.0.5/token", "token_url's host resolves to a private address, which is not allowed"),
        ("https://192.168.1.1/token", "token_url's host resolves to a private address, which is not allowed"),
        ("https://172.16.0.1/token", "token_url's host resolves to a private address, which is not allowed"),
        ("https://100.64.0.1/token", "token_url's host resolves to a private address, which is not allowed"),
        ("https://169.254.1.1/token", "token_url's host resolves to a link-local address, which is not allowed"),
        ("https://169.254.169.254/latest/meta-data", "token_url's host resolves to a cloud metadata address, which is not allowed"),
        ("https://[fd00:ec2::254]/token", "token_url's host resolves to a cloud metadata address, which is not allowed"),
        ("https://[::ffff:10.0.0.5]/token", "token_url's host resolves to a private address, which is not allowed"),
        ("https://127.0.0.1/token", "token_url's host resolves to a loopback address, which is not allowed"),
        ("https://localhost/token", "token_url's host resolves to a loopback address, which is not allowed"),
        ("https://0.0.0.0/token", "token_url's host resolves to not a unicast address, which is not allowed"),
        ("http://auth.example.com/token", "token_url must use https"),
        ("https://user:pw@auth.example.com/token", "token_url must not carry user information"),
    ],
)  # fmt: skip
async def test_a_token_url_outside_the_egress_rules_is_refused_on_create(
    client: httpx.AsyncClient, caller: Caller, token_url: str, msg: str
) -> None:
    secret = {"access_token": "a", "refresh_token": "r", "token_url": token_url, "client_id": CLIENT_ID}

    response = await client.post(
        API, json=new_credential(auth_type="oauth_token_refresh", credentials=secret), headers=caller.headers
    )

    assert (response.status_code, response.json()) == (
        422,
        {"detail": [{"loc": ["body", "credentials", "token_url"], "msg": msg, "type": "url_refused"}]},
    )
    assert await Credential.count() == 0


async def test_a_token_url_outside_the_egress_rules_is_refused_on_update(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    secret = {"access_token": "a", "refresh_token": "r", "token_url": "https://auth.example.com/t", "client_id": "c"}
    created = await create_oauth(client, caller, secret, auth_type="oauth_token_refresh")

    response = await client.put(
        f"{API}/{created['id']}",
        json={"credentials": {**secret, "token_url": "https://10.0.0.5/token"}},
        headers=caller.headers,
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "credentials", "token_url"]
