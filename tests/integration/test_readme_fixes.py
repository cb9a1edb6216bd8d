"""What the README promised and the service did not quite do: restoring the current version, and the auth-type
schemas advertising OAuth fields for types that have nothing to do with OAuth."""

from __future__ import annotations

import httpx

from tests.support.api import Caller, create

API = "/api/v1/credentials"


async def test_restoring_the_current_version_creates_no_identical_new_version(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    created = await create(client, caller, credentials={"api_key": "one"})
    await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": "two"}}, headers=caller.headers)
    before = (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json()

    restored = await client.post(f"{API}/{created['id']}/versions/2/restore", headers=caller.headers)

    assert restored.status_code == 200
    assert restored.json() == before
    versions = (await client.get(f"{API}/{created['id']}/versions", headers=caller.headers)).json()["versions"]
    assert [(v["version"], v["reason"]) for v in versions] == [(2, "update"), (1, "create")]
    # An older version still comes back as a new one.
    assert (await client.post(f"{API}/{created['id']}/versions/1/restore", headers=caller.headers)).status_code == 200
    now = (await client.post(f"{API}/{created['id']}/reveal", headers=caller.headers)).json()
    assert (now["version"], now["credentials"]) == (3, {"api_key": "one"})


async def test_auth_types_list_oauth_fields_only_for_token_types(client: httpx.AsyncClient, caller: Caller) -> None:
    schemas = (await client.get(f"{API}/auth-types", headers=caller.headers)).json()
    fields = {name: [(f["name"], f["required"]) for f in schema["fields"]] for name, schema in schemas.items()}

    assert fields["api_key"] == [("api_key", True), ("expires_at", False)]
    assert fields["basic_auth"] == [("username", True), ("password", True), ("expires_at", False)]
    assert fields["connection_string"] == [("connection_string", True), ("expires_at", False)]
    oauth = {"scope", "client_secret", "token_type", "token_endpoint_auth_method"}
    for token_type in ("access_token", "oauth_token", "oauth_token_refresh", "access_token_refresh"):
        assert oauth <= {name for name, required in fields[token_type] if not required}, token_type
