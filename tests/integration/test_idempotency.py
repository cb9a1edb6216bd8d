"""``Idempotency-Key`` on create, refresh, restore and version restore: one effect per key, the first response
replayed, another request with the same key refused, and concurrent duplicates on two instances settled once."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import httpx
import pytest

from db.tables import Credential
from tests.support.api import API, Caller, create, new_credential
from tests.support.oauth import TokenEndpoint, create_oauth, oauth_secret


def keyed(caller: Caller, key: str) -> dict[str, str]:
    return {**caller.headers, "Idempotency-Key": key}


async def count_in(workspace: str) -> int:
    return int(await Credential.count().where(Credential.workspace_id == workspace))


async def versions_of(client: httpx.AsyncClient, caller: Caller, cid: str) -> list[tuple[int, str]]:
    listed = (await client.get(f"{API}/{cid}/versions", headers=caller.headers)).json()["versions"]
    return [(v["version"], v["reason"]) for v in listed]


async def test_a_repeated_create_answers_the_first_response_and_creates_nothing_more(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    key, body = str(uuid.uuid4()), new_credential()
    first = await client.post(API, json=body, headers=keyed(caller, key))
    again = await client.post(API, json=body, headers=keyed(caller, key))

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count_in(caller.workspace) == 1


async def test_the_same_key_with_another_body_is_refused(client: httpx.AsyncClient, caller: Caller) -> None:
    key = str(uuid.uuid4())
    assert (await client.post(API, json=new_credential(), headers=keyed(caller, key))).status_code == 200
    # Only the secret differs: still another request.
    other = await client.post(API, json=new_credential(), headers=keyed(caller, key))

    assert other.status_code == 422
    assert other.json() == {
        "detail": [
            {
                "loc": ["header", "idempotency_key"],
                "msg": "This Idempotency-Key was used with another request (method, path or body); use a new key",
                "type": "idempotency_key_reused",
            }
        ]
    }
    assert await count_in(caller.workspace) == 1


async def test_keys_belong_to_their_caller_and_without_one_nothing_changes(
    client: httpx.AsyncClient, make_caller: object
) -> None:
    one = await make_caller()  # type: ignore[operator]
    other = await make_caller(one.workspace)  # type: ignore[operator]
    key, body = "shared-key", new_credential()
    a = await client.post(API, json=body, headers=keyed(one, key))
    b = await client.post(API, json=body, headers=keyed(other, key))
    assert a.json()["id"] != b.json()["id"]
    c = await client.post(API, json=body, headers=one.headers)
    d = await client.post(API, json=body, headers=one.headers)
    assert c.json()["id"] != d.json()["id"]
    assert await count_in(one.workspace) == 4


async def test_an_error_is_not_kept_so_a_corrected_retry_runs(client: httpx.AsyncClient, caller: Caller) -> None:
    key = str(uuid.uuid4())
    wrong = await client.post(API, json=new_credential(credentials={"nope": "x"}), headers=keyed(caller, key))
    assert wrong.status_code == 422
    fixed = await client.post(API, json=new_credential(), headers=keyed(caller, key))
    assert fixed.status_code == 200
    assert await count_in(caller.workspace) == 1


@pytest.mark.parametrize("key", ["has space", "x" * 256, "caf\u00e9".encode(), ""])
async def test_a_malformed_key_is_refused(client: httpx.AsyncClient, caller: Caller, key: str | bytes) -> None:
    response = await client.post(API, json=new_credential(), headers={**caller.headers, "Idempotency-Key": key})  # type: ignore[dict-item]
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency_key"]
    assert await count_in(caller.workspace) == 0


async def test_no_secret_is_stored_with_the_key(client: httpx.AsyncClient, caller: Caller) -> None:
    secret = f"sk_live_{secrets.token_hex(16)}"
    key = str(uuid.uuid4())
    assert (
        await client.post(API, json=new_credential(credentials={"api_key": secret}), headers=keyed(caller, key))
    ).status_code == 200
    stored = await Credential.raw("SELECT * FROM idempotency_key WHERE key = {}", key)
    assert len(stored) == 1
    assert secret not in repr(stored)
    assert stored[0]["fingerprint"].startswith("vault:v1:")


async def test_a_repeated_version_restore_makes_one_new_version(client: httpx.AsyncClient, caller: Caller) -> None:
    cid = (await create(client, caller))["id"]
    assert (
        await client.put(f"{API}/{cid}", json={"credentials": {"api_key": "v2"}}, headers=caller.headers)
    ).status_code == 200
    key = str(uuid.uuid4())
    first = await client.post(f"{API}/{cid}/versions/1/restore", headers=keyed(caller, key))
    again = await client.post(f"{API}/{cid}/versions/1/restore", headers=keyed(caller, key))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert await versions_of(client, caller, cid) == [(3, "restore"), (2, "update"), (1, "create")]
    # The same key on another path is another request.
    other = await client.post(f"{API}/{cid}/versions/2/restore", headers=keyed(caller, key))
    assert other.status_code == 422


async def test_a_repeated_restore_answers_the_first_response(client: httpx.AsyncClient, caller: Caller) -> None:
    cid = (await create(client, caller))["id"]
    assert (await client.delete(f"{API}/{cid}", headers=caller.headers)).status_code == 200
    key = str(uuid.uuid4())
    first = await client.post(f"{API}/{cid}/restore", headers=keyed(caller, key))
    again = await client.post(f"{API}/{cid}/restore", headers=keyed(caller, key))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    # Without the key the second restore finds nothing deleted.
    assert (await client.post(f"{API}/{cid}/restore", headers=caller.headers)).status_code == 404


async def test_a_repeated_refresh_calls_the_provider_once(
    app: httpx.AsyncClient,
    caller: Caller,
    endpoint: TokenEndpoint,
) -> None:
    cid = (await create_oauth(app, caller, oauth_secret(endpoint, expires_at=None)))["id"]
    key = str(uuid.uuid4())
    first = await app.post(f"{API}/{cid}/refresh", headers=keyed(caller, key))
    again = await app.post(f"{API}/{cid}/refresh", headers=keyed(caller, key))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert endpoint.calls == 1
    assert (await app.post(f"{API}/{cid}/refresh", headers=caller.headers)).status_code == 200
    assert endpoint.calls == 2


@pytest.mark.e2e
async def test_concurrent_duplicates_on_two_instances_make_one_credential(
    client: httpx.AsyncClient, served: str, caller: Caller
) -> None:
    key, body = str(uuid.uuid4()), new_credential()
    async with httpx.AsyncClient(base_url=served, timeout=30) as other:
        responses = await asyncio.gather(
            *((client if i % 2 else other).post(API, json=body, headers=keyed(caller, key)) for i in range(12))
        )
    assert [r.status_code for r in responses] == [200] * 12
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 11
    assert await count_in(caller.workspace) == 1


async def test_the_service_policy_allows_the_fingerprint(approle_client: httpx.AsyncClient, caller: Caller) -> None:
    """Production runs with the credentials-service policy: the transit HMAC path must be in it."""
    key, body = str(uuid.uuid4()), new_credential()
    first = await approle_client.post(API, json=body, headers=keyed(caller, key))
    again = await approle_client.post(API, json=body, headers=keyed(caller, key))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
