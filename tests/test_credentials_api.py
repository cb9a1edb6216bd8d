"""The credentials endpoints end to end in process: create, list, get, update, delete, reveal."""

from __future__ import annotations

import httpx

from tests.helpers import API, Caller, new_credential


async def create(client: httpx.AsyncClient, caller: Caller, **overrides: object) -> dict[str, object]:
    response = await client.post(API, json=new_credential(**overrides), headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_answers_the_read_schema_with_server_set_fields(client: httpx.AsyncClient, caller: Caller) -> None:
    body = new_credential(description="billing", credential_type="integration", user_id="usr_1")
    response = await client.post(API, json=body, headers=caller.headers)

    assert response.status_code == 200
    created = response.json()
    assert set(created) == {
        "label", "description", "auth_type", "credential_type", "credential_scope", "provider", "user_id", "id",
        "workspace_id", "created_by", "status", "expires_at", "last_used_at", "created_at", "updated_at",
    }  # fmt: skip
    assert created["label"] == "Stripe production"
    assert created["description"] == "billing"
    assert created["credential_type"] == "integration"
    assert created["user_id"] == "usr_1"
    assert created["provider"] == "custom"
    assert created["status"] == "active"
    assert created["workspace_id"] == caller.workspace
    assert created["created_by"] == caller.key_id
    assert created["last_used_at"] is None
    assert created["created_at"] == created["updated_at"]
    assert "credentials" not in created
    assert response.headers["x-request-id"]
