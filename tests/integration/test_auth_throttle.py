"""Failed authentication is throttled per address and per key prefix, logged and counted (issue 16, point 6); keys
users make expire by default when configured (point 11)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from devtools.stack import BaoServer
from service.errors import AuthFailure
from tests.support.api import API, MakeCaller
from tests.support.metrics import sample
from tests.support.servers import running_app, settings_for
from tests.support.tokens import AUDIENCE, HS256_SECRET, ISSUER, mint

PER_KEY, PER_ADDRESS = 3, 5
TOO_MANY = {"detail": "Too many failed authentication attempts; retry later"}


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        database_url,
        bao,
        CREDENTIALS_AUTH_FAILURES_PER_KEY=f"{PER_KEY}/minute",
        CREDENTIALS_AUTH_FAILURES_PER_ADDRESS=f"{PER_ADDRESS} per 2 seconds",
        CREDENTIALS_TRUST_X_FORWARDED_FOR="true",
        CREDENTIALS_JWT_HS256_SECRET=HS256_SECRET,
        CREDENTIALS_JWT_ISSUER=ISSUER,
        CREDENTIALS_JWT_AUDIENCE=AUDIENCE,
        CREDENTIALS_USER_API_KEY_TTL="3600",
    )
    async with running_app(settings) as throttled:
        yield throttled


def from_address(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.7, {address}", **headers}


def wrong_secret(key: str) -> str:
    return key[:-43] + secrets.token_urlsafe(32)[:43]  # the same prefix, another secret


async def test_wrong_secrets_for_one_key_prefix_get_429_after_the_budget_from_any_address(
    app: httpx.AsyncClient, make_caller: MakeCaller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caller = await make_caller()
    prefix = caller.key[: len("ck_") + 16]
    guesses = [wrong_secret(caller.key) for _ in range(PER_KEY + 1)]

    answers = [
        await app.get(API, headers=from_address(f"203.0.113.{n}", Authorization=f"Bearer {guess}"))
        for n, guess in enumerate(guesses)
    ]
    right_key = await app.get(API, headers=from_address("203.0.113.99", **caller.headers))
    other_key = await make_caller()
    unaffected = await app.get(API, headers=from_address("203.0.113.99", **other_key.headers))

    assert [a.status_code for a in answers] == [401] * PER_KEY + [429]
    assert answers[-1].json() == TOO_MANY
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
    assert (right_key.status_code, right_key.json()) == (429, TOO_MANY)  # the prefix is spent, for everyone
    assert unaffected.status_code == 200
    failures = [r.getMessage() for r in caplog.records if r.name == "service.auth.throttle"]
    assert failures == [
        f"authentication failed: reason=invalid_api_key address=203.0.113.{n} key={prefix}" for n in range(PER_KEY)
    ]
    for guess in guesses:
        # The secret part whole: it may itself hold "_" (URL-safe base64), so a split on the last "_" could leave a
        # single character, which a log line holds anyway (CI failed once on '0', from "203.0.113.0").
        assert guess[len(prefix) + 1 :] not in caplog.text


async def test_failures_from_one_address_get_429_for_the_window_then_pass_again(app: httpx.AsyncClient) -> None:
    address = f"192.0.2.{secrets.randbelow(250)}"
    bad = [
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic abc"},
        {},
        {"Authorization": f"Bearer {mint('usr_1', {'w': 'owner'}, lifetime=-120)}"},
        {"X-API-Key": "ck_0123456789abcdef_" + "a" * 43},
    ]

    answers = [await app.get(API, headers=from_address(address, **h)) for h in bad]
    blocked = await app.get(API, headers=from_address(address))
    elsewhere = await app.get(API, headers=from_address("192.0.2.254"))
    time.sleep(2.1)
    again = await app.get(API, headers=from_address(address))

    assert [a.status_code for a in answers] == [401] * PER_ADDRESS
    assert (blocked.status_code, blocked.json()) == (429, TOO_MANY)
    assert 1 <= int(blocked.headers["retry-after"]) <= 2
    assert elsewhere.status_code == 401
    assert again.status_code == 401


async def test_each_failure_is_logged_and_counted_under_its_one_reason(
    app: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    expired = mint("usr_1", {"w": "owner"}, lifetime=-120)
    attempts = [
        ("192.0.2.201", {}, AuthFailure.missing),
        ("192.0.2.202", {"Authorization": "Bearer ck_nope"}, AuthFailure.invalid_api_key),
        ("192.0.2.203", {"Authorization": f"Bearer {expired}"}, AuthFailure.expired_token),
        ("192.0.2.204", {"Authorization": "Token x"}, AuthFailure.malformed_header),
    ]
    before = (await app.get("/metrics")).text
    with caplog.at_level(logging.WARNING, logger="service.auth.throttle"):
        for address, headers, _ in attempts:
            assert (await app.get(API, headers=from_address(address, **headers))).status_code == 401
    after = (await app.get("/metrics")).text

    logged = [r.getMessage() for r in caplog.records if r.name == "service.auth.throttle"]
    assert [line.split("reason=")[1].split(" ")[0] for line in logged] == [reason for _, _, reason in attempts]
    for _, _, reason in attempts:
        name = "credentials_auth_failures_total"
        assert sample(after, name, reason=reason) - sample(before, name, reason=reason) == 1, reason


# --- point 11: keys made by users expire by default ------------------------------------------------------------------


async def test_a_key_a_user_makes_without_expiry_expires_after_the_configured_ttl(app: httpx.AsyncClient) -> None:
    workspace = f"wsp_{secrets.token_hex(4)}"
    owner = {"Authorization": f"Bearer {mint('usr_owner', {workspace: 'owner'})}"}
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()

    defaulted = await app.post("/api/v1/api-keys", json={"label": "ci"}, headers=from_address("192.0.2.9", **owner))
    explicit = await app.post(
        "/api/v1/api-keys", json={"label": "ci", "expires_at": later}, headers=from_address("192.0.2.9", **owner)
    )

    assert defaulted.status_code == 200, defaulted.text
    expires = datetime.fromisoformat(defaulted.json()["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert datetime.fromisoformat(explicit.json()["expires_at"]) == datetime.fromisoformat(later)


async def test_a_key_an_admin_key_makes_keeps_no_expiry(app: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    admin = await make_caller(permissions=("read", "admin"))

    made = await app.post("/api/v1/api-keys", json={"label": "ci"}, headers=from_address("192.0.2.10", **admin.headers))

    assert (made.status_code, made.json()["expires_at"]) == (200, None)
