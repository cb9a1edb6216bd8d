"""The credentials endpoints end to end in process: create, list, get, update, delete, reveal."""

from __future__ import annotations

import httpx

from devtools.stack import BaoServer
from tests.support.api import API, Caller, MakeCaller, create, new_credential


async def test_create_answers_the_read_schema_with_server_set_fields(client: httpx.AsyncClient, caller: Caller) -> None:
    body = new_credential(description="billing", credential_type="integration", user_id="usr_1")
    response = await client.post(API, json=body, headers=caller.headers)

    assert response.status_code == 200
    created = response.json()
    assert set(created) == {
        "label", "description", "auth_type", "credential_type", "credential_scope", "provider", "user_id", "id",
        "workspace_id", "created_by", "status", "expires_at", "last_used_at", "created_at", "updated_at",
        "status_reason", "status_changed_at",
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


async def test_get_returns_what_create_returned(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller)

    response = await client.get(f"{API}/{created['id']}", headers=caller.headers)

    assert response.status_code == 200
    assert response.json() == created


async def test_unknown_and_malformed_ids_are_not_found(client: httpx.AsyncClient, caller: Caller) -> None:
    for credential_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = await client.get(f"{API}/{credential_id}", headers=caller.headers)
        assert response.status_code == 404
        assert response.json() == {"detail": "Credential not found"}


async def test_list_is_newest_first_with_mielto_pagination(client: httpx.AsyncClient, caller: Caller) -> None:
    ids = [(await create(client, caller, label=f"cred {i}"))["id"] for i in range(5)]

    first = (await client.get(API, params={"limit": 2}, headers=caller.headers)).json()
    second = (await client.get(API, params={"skip": 2, "limit": 2}, headers=caller.headers)).json()
    last = (await client.get(API, params={"skip": 4, "limit": 2}, headers=caller.headers)).json()

    assert [c["id"] for c in first["credentials"]] == ids[::-1][0:2]
    assert [c["id"] for c in second["credentials"]] == ids[::-1][2:4]
    assert [c["id"] for c in last["credentials"]] == ids[::-1][4:]
    assert (first["total"], first["page"], first["size"]) == (5, 1, 2)
    assert (second["total"], second["page"], second["size"]) == (5, 2, 2)
    assert (last["total"], last["page"], last["size"]) == (5, 3, 2)


async def test_list_defaults_to_skip_0_limit_100(client: httpx.AsyncClient, caller: Caller) -> None:
    await create(client, caller)

    body = (await client.get(API, headers=caller.headers)).json()

    assert (body["total"], body["page"], body["size"], len(body["credentials"])) == (1, 1, 100, 1)


async def test_list_filters_combine(client: httpx.AsyncClient, caller: Caller) -> None:
    llm = await create(client, caller, credential_type="llm", auth_type="api_key")
    storage = await create(
        client,
        caller,
        credential_type="storage",
        auth_type="basic_auth",
        credentials={"username": "u", "password": "p"},
    )
    await create(client, caller, credential_type="llm", auth_type="access_token", credentials={"access_token": "t"})

    async def ids(**params: str) -> list[str]:
        body = (await client.get(API, params=params, headers=caller.headers)).json()
        assert body["total"] == len(body["credentials"])
        return [c["id"] for c in body["credentials"]]

    assert await ids(credential_type="storage") == [storage["id"]]
    assert await ids(auth_type="basic_auth") == [storage["id"]]
    assert await ids(credential_type="llm", auth_type="api_key") == [llm["id"]]
    assert await ids(status="active", credential_type="llm", auth_type="api_key") == [llm["id"]]
    assert await ids(status="inactive") == []


async def test_search_is_case_insensitive_over_label_and_description(client: httpx.AsyncClient, caller: Caller) -> None:
    by_label = await create(client, caller, label="OpenAI production")
    by_description = await create(client, caller, label="LLM", description="key for openai evals")
    await create(client, caller, label="Stripe", description="payments")

    body = (await client.get(API, params={"search": "OPENai"}, headers=caller.headers)).json()

    assert sorted(c["id"] for c in body["credentials"]) == sorted([by_label["id"], by_description["id"]])
    assert body["total"] == 2


async def test_search_treats_like_wildcards_literally(client: httpx.AsyncClient, caller: Caller) -> None:
    percent = await create(client, caller, label="100% uptime")
    await create(client, caller, label="1000 uptime")

    for term, expected in (("100%", [percent["id"]]), ("_", []), ("%", [percent["id"]])):
        body = (await client.get(API, params={"search": term}, headers=caller.headers)).json()
        assert [c["id"] for c in body["credentials"]] == expected, term


async def test_update_changes_only_what_is_sent(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, description="old description")

    response = await client.put(f"{API}/{created['id']}", json={"label": "renamed"}, headers=caller.headers)

    assert response.status_code == 200
    updated = response.json()
    assert updated["label"] == "renamed"
    assert updated["description"] == "old description"
    assert updated["credential_scope"] == created["credential_scope"]
    assert updated["updated_at"] > created["updated_at"]
    assert {k: v for k, v in updated.items() if k not in {"label", "updated_at"}} == {
        k: v for k, v in created.items() if k not in {"label", "updated_at"}
    }
    assert (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json() == updated


async def test_update_with_null_fields_leaves_them_unchanged(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, description="kept")

    response = await client.put(
        f"{API}/{created['id']}", json={"label": None, "description": None, "credentials": None}, headers=caller.headers
    )

    assert response.status_code == 200
    assert response.json()["description"] == "kept"
    assert response.json()["label"] == created["label"]


async def test_new_credentials_become_a_new_version(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, credentials={"api_key": "first"})

    updated = await client.put(
        f"{API}/{created['id']}", json={"credentials": {"api_key": "second"}}, headers=caller.headers
    )
    revealed = await client.post(f"{API}/{created['id']}/reveal", headers=caller.headers)

    assert updated.status_code == 200
    assert updated.json()["updated_at"] > created["updated_at"]
    assert revealed.json() == {
        "id": created["id"],
        "version": 2,
        "auth_type": "api_key",
        "credentials": {"api_key": "second"},
    }


async def test_reveal_returns_the_secret_uncached_and_sets_last_used_at(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    secret = {"api_key": "sk_test_reveal", "nested": {"region": "eu", "ids": [1, 2]}}
    created = await create(client, caller, credentials=secret)

    response = await client.post(f"{API}/{created['id']}/reveal", headers=caller.headers)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"id": created["id"], "version": 1, "auth_type": "api_key", "credentials": secret}
    after = (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    assert after["last_used_at"] is not None
    assert after["last_used_at"] >= created["created_at"]


async def test_delete_removes_metadata_and_secret(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller)

    response = await client.delete(f"{API}/{created['id']}", headers=caller.headers)

    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "deleted": True}
    for method, path in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/reveal")):
        again = await client.request(method, f"{API}/{created['id']}{path}", json={}, headers=caller.headers)
        assert again.status_code == 404, method
    listed = (await client.get(API, headers=caller.headers)).json()
    assert listed["total"] == 0


async def test_list_and_get_make_no_vault_call(client: httpx.AsyncClient, caller: Caller, bao: BaoServer) -> None:
    created = await create(client, caller)
    before = bao.audit_log.read_text().count("\n")

    assert (await client.get(API, headers=caller.headers)).status_code == 200
    assert (await client.get(f"{API}/{created['id']}", headers=caller.headers)).status_code == 200

    assert bao.audit_log.read_text().count("\n") == before


async def test_request_id_from_the_client_is_echoed(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(API, headers={**caller.headers, "X-Request-Id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    # Anything else (too long, odd characters) is replaced by a generated id.
    response = await client.get(API, headers={**caller.headers, "X-Request-Id": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


async def test_two_callers_in_one_workspace_see_the_same_credentials(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    writer = await make_caller()
    reader = await make_caller(writer.workspace, ("read",))
    created = await create(client, writer)

    listed = (await client.get(API, headers=reader.headers)).json()

    assert [c["id"] for c in listed["credentials"]] == [created["id"]]
    assert listed["credentials"][0]["created_by"] == writer.key_id


async def test_total_is_exact_up_to_the_limit_and_estimated_beyond(
    database_url: str, bao: BaoServer, make_caller: MakeCaller
) -> None:
    from tests.support.servers import running_app, settings_for

    async with running_app(settings_for(database_url, bao, CREDENTIALS_LIST_EXACT_COUNT_LIMIT="3")) as small:
        caller = await make_caller()
        ids = [(await create(small, caller, label=f"c{i}"))["id"] for i in range(3)]
        exact = (await small.get(API, headers=caller.headers)).json()
        assert exact["total"] == 3

        ids += [(await create(small, caller, label=f"c{i}"))["id"] for i in range(3, 5)]
        beyond = (await small.get(API, params={"limit": 2}, headers=caller.headers)).json()

        # Past the limit the total is the planner's estimate, never less than limit + 1; the page is exact.
        assert beyond["total"] >= 4
        assert [c["id"] for c in beyond["credentials"]] == ids[::-1][:2]
        filtered = (await small.get(API, params={"search": "c4"}, headers=caller.headers)).json()
        assert (filtered["total"], [c["id"] for c in filtered["credentials"]]) == (1, [ids[4]])
