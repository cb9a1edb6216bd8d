"""Hostile or odd token endpoints (issue 16, points 2, 9 and 13): compressed answers, error codes carrying text of
the provider's choosing, and the proactive refresh of every scope."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from devtools.stack import BaoServer
from service.config import Settings
from service.oauth.client import ClientPolicy, RefreshFailed, RefreshGrant, TokenClient
from service.oauth.egress import EgressRules
from tests.support.api import API, MakeCaller, create
from tests.support.servers import credctl, env_for, running_app, settings_for
from tests.support.token_endpoint import ScriptedEndpoint, scripted_endpoint

TOKENS = {"access_token": "at_new_0123456789abcdef", "refresh_token": "rt_new_0123456789abcdef", "expires_in": 3600}


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedEndpoint]:
    with scripted_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def provider(scripted: ScriptedEndpoint) -> ScriptedEndpoint:
    scripted.requests.clear()
    scripted.answer(200, TOKENS)
    return scripted


def loopback_client(max_response_bytes: int = 64 * 1024) -> TokenClient:
    return TokenClient(
        ClientPolicy(
            timeout=2, max_attempts=1, max_response_bytes=max_response_bytes, egress=EgressRules(allow_loopback=True)
        )
    )


def grant(provider: ScriptedEndpoint) -> RefreshGrant:
    return RefreshGrant(token_url=provider.url, refresh_token="rt_old", client_id="c", client_secret="s")


# --- point 2: Content-Encoding ------------------------------------------------------------------------------------


async def test_the_client_asks_for_an_uncompressed_answer(provider: ScriptedEndpoint) -> None:
    await loopback_client().refresh(grant(provider))

    assert provider.requests[-1]["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
async def test_a_compressed_answer_sent_anyway_is_decompressed(
    provider: ScriptedEndpoint, encoding: str, compress: object
) -> None:
    import msgspec

    provider.answer(200, compress(msgspec.json.encode(TOKENS)), content_encoding=encoding)  # type: ignore[operator]

    tokens = await loopback_client().refresh(grant(provider))

    assert (tokens.access_token, tokens.refresh_token) == (TOKENS["access_token"], TOKENS["refresh_token"])


async def test_a_gzip_bomb_is_refused_within_the_size_bound(provider: ScriptedEndpoint) -> None:
    bomb = gzip.compress(b'{"access_token": "' + b"a" * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024
    provider.answer(200, bomb, content_encoding="gzip")

    with pytest.raises(RefreshFailed, match="exceeds 65536 bytes"):
        await loopback_client().refresh(grant(provider))


# --- the API with this endpoint -----------------------------------------------------------------------------------


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        database_url, bao, CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true", CREDENTIALS_OAUTH_MAX_ATTEMPTS="1"
    )
    async with running_app(settings) as oauth_client:
        yield oauth_client


def secret(provider: ScriptedEndpoint, expires_at: str = "2020-01-01T00:00:00+00:00") -> dict[str, object]:
    return {
        "access_token": "at_old_0123456789abcdef",
        "refresh_token": "rt_old_0123456789abcdef",
        "token_url": provider.url,
        "client_id": "client-1",
        "expires_at": expires_at,
    }


async def test_a_gzip_answer_refreshes_a_rotating_credential_through_the_api(
    app: httpx.AsyncClient, make_caller: MakeCaller, provider: ScriptedEndpoint
) -> None:
    import msgspec

    caller = await make_caller()
    provider.answer(200, gzip.compress(msgspec.json.encode(TOKENS)), content_encoding="gzip")
    created = await create(app, caller, auth_type="oauth_token_refresh_rotation", credentials=secret(provider))

    revealed = await app.post(f"{API}/{created['id']}/reveal", headers=caller.headers)

    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["credentials"]["refresh_token"] == TOKENS["refresh_token"]


# --- point 13: the provider's error text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        ("invalid_grant", "the provider rejected the refresh: invalid_grant (HTTP 400)"),
        (
            "see https://evil.example/phish?u=1",
            "the provider rejected the refresh: unrecognised error code (HTTP 400)",
        ),
        ("Invalid grant. Visit evil.example", "the provider rejected the refresh: unrecognised error code (HTTP 400)"),
    ],
)
async def test_only_a_well_formed_error_code_of_the_provider_reaches_the_client(
    app: httpx.AsyncClient, make_caller: MakeCaller, provider: ScriptedEndpoint, code: str, shown: str
) -> None:
    caller = await make_caller()
    provider.answer(400, {"error": code, "error_description": "go to https://evil.example/login", "error_uri": "x"})
    created = await create(app, caller, auth_type="oauth_token_refresh", credentials=secret(provider))

    refused = await app.post(f"{API}/{created['id']}/refresh", headers=caller.headers)
    after = await app.get(f"{API}/{created['id']}", headers=caller.headers)

    assert refused.status_code == 409
    assert refused.json() == {"detail": f"The credential is in error: {shown}"}
    assert after.json()["status_reason"] == shown
    assert "evil" not in refused.text + after.text


# --- point 9: the proactive refresh reaches every scope -------------------------------------------------------------


async def test_refresh_due_refreshes_user_scoped_credentials_too(
    app: httpx.AsyncClient, settings: Settings, make_caller: MakeCaller, provider: ScriptedEndpoint
) -> None:
    admin = await make_caller(permissions=("read", "write", "reveal", "admin"))
    soon = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    owned = {}
    for scope in ("workspace", "user", "workspace_member"):
        owned[scope] = await create(
            app,
            admin,
            auth_type="oauth_token_refresh",
            credential_scope=scope,
            user_id=None if scope == "workspace" else "user-1",
            credentials=secret(provider, soon),
        )

    result = await asyncio.to_thread(
        credctl, "refresh-due", "--window", "300", env=env_for(settings, CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true")
    )

    assert (result.returncode, result.stdout.strip()) == (
        0,
        "3 due: 3 refreshed, 0 skipped (already fresh, disabled or gone), 0 failed",
    ), result.stderr
    for created in owned.values():
        listed = (await app.get(f"{API}/{created['id']}/versions", headers=admin.headers)).json()["versions"]
        assert [v["reason"] for v in listed] == ["refresh", "create"]
