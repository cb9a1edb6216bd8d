"""Who may call what: API keys by either header, permissions, X-Workspace-Id, and 401/403 bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from db.tables import ApiKey
from tests.helpers import API, Caller, MakeCaller, new_credential

ENDPOINTS = [
    ("POST", "", "write"),
    ("GET", "", "read"),
    ("GET", "/{id}", "read"),
    ("PUT", "/{id}", "write"),
    ("DELETE", "/{id}", "write"),
    ("POST", "/{id}/reveal", "reveal"),
]


async def existing_id(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await client.post(API, json=new_credential(), headers=caller.headers)
    assert response.status_code == 200
    return str(response.json()["id"])


def body_for(method: str, path: str) -> dict[str, object] | None:
    if method == "POST" and path == "":
        return new_credential()
    if method == "PUT":
        return {"label": "changed"}
    return None


@pytest.mark.parametrize(("method", "path", "_permission"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer ck_0000000000000000_" + "A" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "ck_0000000000000000_" + "A" * 43},
    ],
    ids=["none", "unknown-key", "malformed-key", "basic-scheme", "empty-bearer", "unknown-x-api-key"],
)
async def test_missing_or_bad_key_is_401_with_bearer_challenge(
    client: httpx.AsyncClient, caller: Caller, method: str, path: str, _permission: str, headers: dict[str, str]
) -> None:
    credential_id = await existing_id(client, caller)

    response = await client.request(
        method, API + path.format(id=credential_id), json=body_for(method, path), headers=headers
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert set(response.json()) == {"detail"}
    assert isinstance(response.json()["detail"], str)


async def test_anonymous_malformed_body_is_401_not_422(client: httpx.AsyncClient) -> None:
    response = await client.post(API, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401


async def test_wrong_secret_for_a_real_lookup_id_is_401(client: httpx.AsyncClient, caller: Caller) -> None:
    tampered = caller.key[:-4] + ("AAAA" if not caller.key.endswith("AAAA") else "BBBB")
    response = await client.get(API, headers={"Authorization": f"Bearer {tampered}"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key"}


async def test_x_api_key_header_works_like_bearer(client: httpx.AsyncClient, caller: Caller) -> None:
    await existing_id(client, caller)
    response = await client.get(API, headers={"X-API-Key": caller.key})
    assert response.status_code == 200
    assert response.json()["total"] == 1


async def test_inactive_and_expired_keys_are_401(client: httpx.AsyncClient, caller: Caller) -> None:
    await ApiKey.update({ApiKey.status: "inactive"}).where(ApiKey.id == caller.key_id)
    assert (await client.get(API, headers=caller.headers)).status_code == 401

    await ApiKey.update({ApiKey.status: "active", ApiKey.expires_at: datetime(2000, 1, 1, tzinfo=UTC)}).where(
        ApiKey.id == caller.key_id
    )
    response = await client.get(API, headers=caller.headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key"}


@pytest.mark.parametrize(("method", "path", "permission"), ENDPOINTS)
@pytest.mark.parametrize("granted", [("read",), ("write",), ("reveal",), ("read", "write"), ("read", "reveal")])
async def test_each_endpoint_needs_its_permission(
    client: httpx.AsyncClient,
    caller: Caller,
    make_caller: MakeCaller,
    method: str,
    path: str,
    permission: str,
    granted: tuple[str, ...],
) -> None:
    credential_id = await existing_id(client, caller)
    limited = await make_caller(caller.workspace, granted)

    response = await client.request(
        method, API + path.format(id=credential_id), json=body_for(method, path), headers=limited.headers
    )

    if permission in granted:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403
        assert response.json() == {"detail": f"This API key lacks the '{permission}' permission"}


async def test_x_workspace_id_must_name_the_keys_workspace(client: httpx.AsyncClient, caller: Caller) -> None:
    same = await client.get(API, headers={**caller.headers, "X-Workspace-Id": caller.workspace})
    other = await client.get(API, headers={**caller.headers, "X-Workspace-Id": "wsp_someone_else"})

    assert same.status_code == 200
    assert other.status_code == 403
    assert other.json() == {"detail": "X-Workspace-Id does not match the API key's workspace"}


async def test_created_by_and_workspace_come_from_the_key_not_the_body(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.post(API, json=new_credential(workspace_id="wsp_forged"), headers=caller.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "workspace_id"]

    created = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    assert created["workspace_id"] == caller.workspace
    assert created["created_by"] == caller.key_id


async def test_keys_are_stored_only_as_hashes(client: httpx.AsyncClient, caller: Caller) -> None:
    rows = await ApiKey.select().where(ApiKey.id == caller.key_id)
    stored = " ".join(str(value) for value in rows[0].values())
    secret_part = caller.key.split("_", 2)[2]
    assert secret_part not in stored
    assert caller.key not in stored
