"""The proxy tests' shared helpers: settings that let the service call a loopback upstream, and a proxyable
credential for it."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from devtools.stack import BaoServer
from service.config import Settings
from tests.support.api import Caller, create
from tests.support.servers import settings_for
from tests.support.upstream import Upstream

PROXY = "/api/v1/proxy"


def proxy_settings(database_url: str, bao: BaoServer, **variables: str) -> Settings:
    """Loopback upstreams are allowed only here, in tests (``CREDENTIALS_OAUTH_ALLOW_LOOPBACK``); small limits."""
    values = {
        "CREDENTIALS_OAUTH_ALLOW_LOOPBACK": "true",
        "CREDENTIALS_OAUTH_TIMEOUT": "2",
        "CREDENTIALS_OAUTH_RETRY_BACKOFF": "0.05",
        "CREDENTIALS_PROXY_TIMEOUT": "1",
        "CREDENTIALS_PROXY_MAX_REQUEST_BYTES": "2048",
        "CREDENTIALS_PROXY_MAX_RESPONSE_BYTES": "8192",
        # A small pool: this app lives beside the session's, on a Postgres server other sessions share.
        "CREDENTIALS_DB_POOL_MIN": "1",
        "CREDENTIALS_DB_POOL_MAX": "4",
        **variables,
    }
    return settings_for(database_url, bao, **values)


async def proxyable(
    app: httpx.AsyncClient, caller: Caller, upstream: Upstream, *, auth_type: str = "api_key", **proxy: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A credential with proxy settings for ``upstream``; returns it and its secret."""
    token = secrets.token_hex(12)
    secret = {
        "api_key": {"api_key": f"sk_live_{token}"},
        "basic_auth": {"username": "svc", "password": f"pw_{token}"},
        "access_token": {"access_token": f"at_{token}"},
        "public_key_secret": {"public_key": f"pk_{token}", "secret_key": f"sk_{token}"},
    }[auth_type]
    created = await create(
        app, caller, auth_type=auth_type, credentials=secret, proxy={"base_url": upstream.url, **proxy}
    )
    return created, secret


def secret_values(secret: dict[str, Any]) -> list[str]:
    return [v for k, v in secret.items() if k not in {"username", "public_key"}]
