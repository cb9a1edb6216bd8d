"""A real OAuth2 token endpoint for the tests (refresh-token grant with rotation, RFC 6749 section 6), its fixtures,
the app allowed to call it on loopback, and helpers that create and reveal OAuth credentials through the API."""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import msgspec
import pytest

from devtools.stack import BaoServer
from service.config import Settings
from tests.support.api import API, Caller, create
from tests.support.servers import asgi_on_loopback, read_body, running_app, settings_for

CLIENT_ID, CLIENT_SECRET = "client-1", "client-secret-0123456789"

# --- a real OAuth2 token endpoint (RFC 6749 section 6) -----------------------------------------------------------


@dataclass
class TokenEndpoint:
    """Refresh-token grant with rotation: each refresh invalidates the refresh token it used and issues a new one.

    Served by uvicorn in a thread of its own on 127.0.0.1, so it answers whatever the test's event loop is doing.
    ``mode``: ``ok``, ``unavailable`` (503), ``no_new_refresh_token``; ``delay`` slows every answer down.
    """

    url: str = ""
    mode: str = "ok"
    delay: float = 0.0
    expires_in: int = 3600
    calls: int = 0
    auth_methods: list[str] = field(default_factory=list)
    issued_access: list[str] = field(default_factory=list)
    valid_refresh: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.mode, self.delay, self.expires_in, self.calls = "ok", 0.0, 3600, 0
            self.auth_methods.clear()
            self.issued_access.clear()
            self.valid_refresh.clear()

    def issue_refresh_token(self) -> str:
        token = f"rt_{secrets.token_hex(12)}"
        with self.lock:
            self.valid_refresh.add(token)
        return token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await read_body(receive)
        with self.lock:
            self.calls += 1
            mode, delay = self.mode, self.delay
        if delay:
            await asyncio.sleep(delay)
        if mode == "unavailable":
            await self._answer(send, 503, {"error": "temporarily_unavailable"})
            return
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if headers.get("authorization", "").startswith("Basic "):
            pair = base64.b64decode(headers["authorization"][6:]).decode()
            client_id, client_secret = (unquote(part) for part in pair.split(":", 1))
            method = "client_secret_basic"
        else:
            client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
            method = "client_secret_post"
        if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
            await self._answer(send, 401, {"error": "invalid_client"})
            return
        if form.get("grant_type") != "refresh_token":
            await self._answer(send, 400, {"error": "unsupported_grant_type"})
            return
        with self.lock:
            self.auth_methods.append(method)
            if form.get("refresh_token") not in self.valid_refresh:
                invalid = True
            else:
                invalid = False
                self.valid_refresh.discard(form["refresh_token"])
                access = f"at_{secrets.token_hex(12)}"
                self.issued_access.append(access)
        if invalid:
            await self._answer(send, 400, {"error": "invalid_grant", "error_description": "refresh token is invalid"})
            return
        payload: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
        if mode != "no_new_refresh_token":
            payload["refresh_token"] = self.issue_refresh_token()
        await self._answer(send, 200, payload)

    @staticmethod
    async def _answer(send: Any, status: int, payload: dict[str, Any]) -> None:
        body = msgspec.json.encode(payload)
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    with asgi_on_loopback(endpoint, "token endpoint") as (url, _):
        endpoint.url = f"{url}/oauth/token"
        yield endpoint


@pytest.fixture
def endpoint(token_server: TokenEndpoint) -> TokenEndpoint:
    token_server.reset()
    return token_server


def oauth_settings(database_url: str, bao: BaoServer, **variables: str) -> Settings:
    values = {
        "CREDENTIALS_OAUTH_ALLOW_LOOPBACK": "true",
        "CREDENTIALS_OAUTH_TIMEOUT": "2",
        "CREDENTIALS_OAUTH_RETRY_BACKOFF": "0.05",
        "CREDENTIALS_OAUTH_PROACTIVE_INTERVAL": "0",
        **variables,
    }
    return settings_for(database_url, bao, **values)


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    """An app allowed to call the loopback token endpoint (``client`` first: app bindings nest)."""
    async with running_app(oauth_settings(database_url, bao)) as oauth_client:
        yield oauth_client


PAST = "2020-01-01T00:00:00+00:00"


def oauth_secret(endpoint: TokenEndpoint, *, expires_at: str | None = PAST, **extra: str) -> dict[str, object]:
    secret: dict[str, object] = {
        "access_token": f"at_old_{secrets.token_hex(8)}",
        "refresh_token": endpoint.issue_refresh_token(),
        "token_url": endpoint.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **extra,
    }
    if expires_at is not None:
        secret["expires_at"] = expires_at
    return secret


async def create_oauth(
    client: httpx.AsyncClient,
    caller: Caller,
    secret: dict[str, object],
    auth_type: str = "oauth_token_refresh_rotation",
) -> dict[str, Any]:
    """A credential of a refreshable type (rotating by default) holding ``secret``."""
    return await create(client, caller, auth_type=auth_type, credentials=secret)


async def reveal(client: httpx.AsyncClient, caller: Caller, cid: str) -> httpx.Response:
    return await client.post(f"{API}/{cid}/reveal", headers=caller.headers)


async def stored(client: httpx.AsyncClient, caller: Caller, cid: str) -> dict[str, Any]:
    response = await reveal(client, caller, cid)
    assert response.status_code == 200, response.text
    return dict(response.json())
