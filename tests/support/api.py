"""Calling the API in tests: callers, valid bodies, and the one ``create`` helper."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

API = "/api/v1/credentials"


@dataclass(frozen=True)
class Caller:
    """A workspace and an API key in it."""

    workspace: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeCaller = Callable[..., Awaitable[Caller]]


def valid_secret(auth_type: str) -> dict[str, object]:
    """A ``credentials`` object that satisfies ``auth_type``'s required fields, with random secret values."""
    token = secrets.token_hex(12)
    oauth = {
        "access_token": f"at_{token}",
        "refresh_token": f"rt_{token}",
        "token_url": "https://auth.example.com/oauth/token",
        "client_id": "client-1",
    }
    return {
        "api_key": {"api_key": f"sk_live_{token}"},
        "basic_auth": {"username": "svc", "password": f"pw_{token}"},
        "access_token": {"access_token": f"at_{token}"},
        "oauth_token": {"access_token": f"at_{token}"},
        "oauth_token_refresh": oauth,
        "oauth_token_refresh_rotation": oauth,
        "access_token_refresh": {k: v for k, v in oauth.items() if k != "client_id"},
        "public_key_secret": {"public_key": "pk_1", "secret_key": f"sk_{token}"},
        "connection_string": {"connection_string": f"postgresql://svc:{token}@db.example.com/app"},
    }.get(auth_type, {"value": f"custom_{token}"})


def new_credential(**overrides: object) -> dict[str, object]:
    """A valid create body; ``credentials`` matches ``auth_type`` unless given."""
    body: dict[str, object] = {
        "label": "Stripe production",
        "auth_type": "api_key",
        "credential_scope": "workspace",
    }
    body.update(overrides)
    body.setdefault("credentials", valid_secret(str(body["auth_type"])))
    return body


async def create(client: httpx.AsyncClient, who: Caller | Mapping[str, str], **overrides: object) -> dict[str, Any]:
    """Create a credential (``new_credential(**overrides)``) as ``who`` (a caller, or the headers to send) and return
    its body; fails the test on anything but 200."""
    headers = who.headers if isinstance(who, Caller) else dict(who)
    response = await client.post(API, json=new_credential(**overrides), headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())
