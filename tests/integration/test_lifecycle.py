"""Secret lifecycle: typed credentials, masked view, versions and restore, If-Match, status, expiry, soft delete."""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import hvac
import pytest

from devtools.stack import BaoServer
from service.config import Settings
from tests.support.api import API, Caller, MakeCaller, create, new_credential, valid_secret
from tests.support.servers import CREDCTL, env_for, running_app, settings_for
from vault.secret import Secret
from vault.store import secret_path


async def reveal(client: httpx.AsyncClient, caller: Caller, cid: str, **params: int) -> httpx.Response:
    return await client.post(f"{API}/{cid}/reveal", params=params, headers=caller.headers)


def error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) == 1
    return dict(detail[0])


# --- typed credentials -------------------------------------------------------------------------------------------

MISSING = [
    ("api_key", {"key": "x"}, "api_key"),
    ("basic_auth", {"username": "u"}, "password"),
    ("access_token", {"token": "t"}, "access_token"),
    ("oauth_token", {"refresh_token": "r"}, "access_token"),
    ("oauth_token_refresh", {"access_token": "a", "token_url": "https://x.example/t", "client_id": "c"}, "refresh_token"),
    ("oauth_token_refresh_rotation", {"access_token": "a", "refresh_token": "r", "client_id": "c"}, "token_url"),
    ("oauth_token_refresh_rotation", {"access_token": "a", "refresh_token": "r", "token_url": "https://x.example/t"}, "client_id"),
    ("access_token_refresh", {"access_token": "a", "token_url": "https://x.example/t"}, "refresh_token"),
    ("public_key_secret", {"public_key": "p"}, "secret_key"),
    ("connection_string", {"dsn": "x"}, "connection_string"),
]  # fmt: skip


@pytest.mark.parametrize(("auth_type", "secret", "field"), MISSING)
async def test_each_auth_type_names_its_missing_field(
    client: httpx.AsyncClient, caller: Caller, auth_type: str, secret: dict[str, str], field: str
) -> None:
    response = await client.post(
        API, json=new_credential(auth_type=auth_type, credentials=secret), headers=caller.headers
    )

    assert error(response) == {
        "loc": ["body", "credentials", field],
        "msg": f"Field required for auth_type '{auth_type}'",
        "type": "missing",
    }


@pytest.mark.parametrize(
    ("auth_type", "secret", "field", "type_"),
    [
        ("api_key", {"api_key": 123}, "api_key", "string_type"),
        ("api_key", {"api_key": "   "}, "api_key", "string_too_short"),
        ("oauth_token_refresh", {**valid_secret("oauth_token_refresh"), "token_url": "not a url"}, "token_url", "url_parsing"),
        ("oauth_token", {"access_token": "a", "expires_at": "next tuesday"}, "expires_at", "datetime_parsing"),
        ("oauth_token", {"access_token": "a", "scope": ["read"]}, "scope", "string_type"),
        ("oauth_token_refresh", {**valid_secret("oauth_token_refresh"), "token_endpoint_auth_method": "jwt"}, "token_endpoint_auth_method", "enum"),
        ("connection_string", {"connection_string": "just some words"}, "connection_string", "connection_string"),
    ],
)  # fmt: skip
async def test_known_fields_are_typed(
    client: httpx.AsyncClient, caller: Caller, auth_type: str, secret: dict[str, Any], field: str, type_: str
) -> None:
    response = await client.post(
        API, json=new_credential(auth_type=auth_type, credentials=secret), headers=caller.headers
    )

    problem = error(response)
    assert (problem["loc"], problem["type"]) == (["body", "credentials", field], type_)


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://user:pw@db:5432/app",
        "mongodb+srv://u:p@cluster.example.net/db",
        "host=db port=5432 dbname=app user=svc",
        "Server=tcp:db.example.com,1433;Database=app;User Id=svc;Password=x;",
    ],
)
async def test_connection_strings_parse_as_url_or_dsn(client: httpx.AsyncClient, caller: Caller, value: str) -> None:
    await create(client, caller, auth_type="connection_string", credentials={"connection_string": value})


async def test_unknown_fields_are_kept_as_given(client: httpx.AsyncClient, caller: Caller) -> None:
    secret = {"api_key": "sk_1", "region": "eu", "extra": {"nested": [1, 2]}}
    created = await create(client, caller, credentials=secret)

    assert (await reveal(client, caller, created["id"])).json()["credentials"] == secret


@pytest.mark.parametrize(
    ("secret", "msg", "type_"),
    [
        ({}, "credentials must not be empty", "value_error"),
        (
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}},
            "credentials may nest at most 8 levels",
            "too_deep",
        ),
        ({"k": "bad\u0000value"}, "strings must not contain NUL characters", "string_nul"),
        ({"bad\u0000key": "v"}, "keys must not contain NUL characters", "string_nul"),
    ],
)
async def test_custom_objects_have_limits(
    client: httpx.AsyncClient, caller: Caller, secret: dict[str, Any], msg: str, type_: str
) -> None:
    response = await client.post(
        API, json=new_credential(auth_type="custom", credentials=secret), headers=caller.headers
    )

    assert error(response) == {"loc": ["body", "credentials"], "msg": msg, "type": type_}


async def test_eight_levels_of_nesting_are_accepted(client: httpx.AsyncClient, caller: Caller) -> None:
    await create(client, caller, auth_type="custom", credentials={"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}})


async def test_update_checks_the_new_secret_against_the_stored_auth_type(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    created = await create(client, caller, auth_type="basic_auth")

    response = await client.put(
        f"{API}/{created['id']}", json={"credentials": {"username": "u"}}, headers=caller.headers
    )

    assert error(response)["loc"] == ["body", "credentials", "password"]
    assert (await reveal(client, caller, created["id"])).json()["version"] == 1


async def test_auth_types_describe_every_type(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(f"{API}/auth-types", headers=caller.headers)

    assert response.status_code == 200
    schemas = response.json()
    assert len(schemas) == 10
    refresh = {f["name"]: f for f in schemas["oauth_token_refresh_rotation"]["fields"]}
    assert {n for n, f in refresh.items() if f["required"]} == {
        "access_token",
        "refresh_token",
        "token_url",
        "client_id",
    }
    assert (refresh["refresh_token"]["secret"], refresh["client_id"]["secret"]) == (True, False)
    assert schemas["oauth_token_refresh_rotation"]["refreshable"] is True
    assert [f["name"] for f in schemas["basic_auth"]["fields"] if f["required"]] == ["username", "password"]


# --- masked view -------------------------------------------------------------------------------------------------


async def test_masked_view_shows_only_the_last_four_characters(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    writer = await make_caller()
    reader = await make_caller(writer.workspace, ("read",))
    created = await create(
        client,
        writer,
        auth_type="oauth_token_refresh",
        credentials={
            "access_token": "at_0123456789abcd",
            "refresh_token": "short",
            "token_url": "https://auth.example.com/token",
            "client_id": "client-1",
        },
    )

    response = await client.get(f"{API}/{created['id']}", params={"include": "masked"}, headers=reader.headers)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["masked_credentials"] == {
        "access_token": "*************abcd",
        "refresh_token": "*****",
        "token_url": "https://auth.example.com/token",
        "client_id": "client-1",
    }
    assert "0123456789" not in response.text
    plain = await client.get(f"{API}/{created['id']}", headers=reader.headers)
    assert "masked_credentials" not in plain.json()


async def test_a_masked_value_sent_back_is_refused_not_stored(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, credentials={"api_key": "sk_live_abcdefgh1234"})
    shown = (await client.get(f"{API}/{created['id']}", params={"include": "masked"}, headers=caller.headers)).json()

    echoed = await client.put(
        f"{API}/{created['id']}", json={"credentials": shown["masked_credentials"]}, headers=caller.headers
    )

    assert error(echoed) == {
        "loc": ["body", "credentials", "api_key"],
        "msg": "This is the masked value; send the real secret or leave the field out",
        "type": "masked_value",
    }
    assert (await reveal(client, caller, created["id"])).json()["credentials"] == {"api_key": "sk_live_abcdefgh1234"}


# --- versions ----------------------------------------------------------------------------------------------------


async def test_versions_list_restore_and_reveal_old(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, credentials={"api_key": "one"})
    for value in ("two", "three"):
        await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": value}}, headers=caller.headers)

    versions = (await client.get(f"{API}/{created['id']}/versions", headers=caller.headers)).json()["versions"]
    assert [(v["version"], v["reason"], v["current"], v["destroyed"]) for v in versions] == [
        (3, "update", True, False),
        (2, "update", False, False),
        (1, "create", False, False),
    ]
    assert {v["created_by"] for v in versions} == {caller.key_id}

    old = await reveal(client, caller, created["id"], version=1)
    assert (old.json()["version"], old.json()["credentials"]) == (1, {"api_key": "one"})

    restored = await client.post(f"{API}/{created['id']}/versions/1/restore", headers=caller.headers)
    assert restored.status_code == 200
    now = (await reveal(client, caller, created["id"])).json()
    assert (now["version"], now["credentials"]) == (4, {"api_key": "one"})
    latest = (await client.get(f"{API}/{created['id']}/versions", headers=caller.headers)).json()["versions"][0]
    assert (latest["version"], latest["reason"], latest["restored_from"]) == (4, "restore", 1)

    for bad in (0, 5):
        response = await client.post(f"{API}/{created['id']}/reveal?version={bad}", headers=caller.headers)
        assert response.status_code == (422 if bad == 0 else 404)
    assert (await client.post(f"{API}/{created['id']}/versions/9/restore", headers=caller.headers)).json() == {
        "detail": "Version 9 not found"
    }


async def test_only_max_versions_are_kept(database_url: str, bao: BaoServer, make_caller: MakeCaller) -> None:
    """Versions kept is the KV mount's config, which the bootstrap writes (no per-key call on create)."""
    admin = hvac.Client(url=bao.addr, token=bao.token)
    mount = f"kv_{uuid.uuid4().hex[:8]}"
    admin.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    # What `credctl vault-bootstrap` writes with CREDENTIALS_MAX_VERSIONS=2 (a mount of its own: the bao is shared).
    admin.adapter.post(f"/v1/{mount}/config", json={"max_versions": 2})
    settings = settings_for(database_url, bao, CREDENTIALS_KV_MOUNT=mount)
    async with running_app(settings) as client:
        caller = await make_caller()
        created = await create(client, caller, credentials={"api_key": "v1"})
        for value in ("v2", "v3"):
            await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": value}}, headers=caller.headers)

        versions = (await client.get(f"{API}/{created['id']}/versions", headers=caller.headers)).json()["versions"]
        assert [(v["version"], v["destroyed"]) for v in versions] == [(3, False), (2, False), (1, True)]
        gone = await reveal(client, caller, created["id"], version=1)
        assert (gone.status_code, gone.json()) == (410, {"detail": "Version 1 was destroyed"})
        restore = await client.post(f"{API}/{created['id']}/versions/1/restore", headers=caller.headers)
        assert restore.status_code == 410


# --- If-Match ----------------------------------------------------------------------------------------------------


async def test_put_with_a_stale_if_match_answers_412_and_changes_nothing(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    created = await client.post(API, json=new_credential(), headers=caller.headers)
    first_etag = created.headers["etag"]
    cid = created.json()["id"]
    fetched = await client.get(f"{API}/{cid}", headers=caller.headers)
    assert fetched.headers["etag"] == first_etag

    ok = await client.put(f"{API}/{cid}", json={"label": "one"}, headers={**caller.headers, "If-Match": first_etag})
    assert ok.status_code == 200
    assert ok.headers["etag"] != first_etag

    stale = await client.put(
        f"{API}/{cid}",
        json={"label": "two", "credentials": {"api_key": "x"}},
        headers={**caller.headers, "If-Match": first_etag},
    )
    assert (stale.status_code, stale.json()) == (
        412,
        {"detail": "The credential changed since it was read (If-Match does not match its ETag)"},
    )
    after = (await client.get(f"{API}/{cid}", headers=caller.headers)).json()
    assert after["label"] == "one"
    assert (await reveal(client, caller, cid)).json()["version"] == 1


async def test_two_concurrent_puts_with_the_same_if_match_one_wins(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await client.post(API, json=new_credential(), headers=caller.headers)
    cid, tag = created.json()["id"], created.headers["etag"]

    results = await asyncio.gather(
        *(
            client.put(
                f"{API}/{cid}",
                json={"credentials": {"api_key": f"writer-{i}"}},
                headers={**caller.headers, "If-Match": tag},
            )
            for i in range(2)
        )
    )

    assert sorted(r.status_code for r in results) == [200, 412]
    winner = next(r for r in results if r.status_code == 200)
    revealed = (await reveal(client, caller, cid)).json()
    assert revealed["version"] == 2
    assert revealed["credentials"]["api_key"] == f"writer-{results.index(winner)}"


# --- status and expiry -------------------------------------------------------------------------------------------


async def test_disable_and_enable(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller)

    disabled = await client.post(
        f"{API}/{created['id']}/disable", json={"reason": "leaked in CI"}, headers=caller.headers
    )

    assert disabled.status_code == 200
    body = disabled.json()
    assert (body["status"], body["status_reason"]) == ("inactive", "leaked in CI")
    assert body["status_changed_at"] is not None
    refused = await reveal(client, caller, created["id"])
    assert (refused.status_code, refused.json()) == (409, {"detail": "The credential is disabled: leaked in CI"})
    listed = (await client.get(API, params={"status": "inactive"}, headers=caller.headers)).json()
    assert [c["id"] for c in listed["credentials"]] == [created["id"]]
    assert (await client.get(API, params={"status": "active"}, headers=caller.headers)).json()["total"] == 0
    # Updates are still allowed while disabled (e.g. to put a fresh secret in).
    assert (
        await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": "rotated"}}, headers=caller.headers)
    ).status_code == 200

    enabled = await client.post(f"{API}/{created['id']}/enable", headers=caller.headers)
    assert (enabled.json()["status"], enabled.json()["status_reason"]) == ("active", None)
    assert (await reveal(client, caller, created["id"])).json()["credentials"] == {"api_key": "rotated"}


async def test_revoke_is_terminal_and_destroys_every_version(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    created = await create(client, caller)
    await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": "v2"}}, headers=caller.headers)

    revoked = await client.post(
        f"{API}/{created['id']}/revoke", json={"reason": "vendor breach"}, headers=caller.headers
    )

    assert (revoked.json()["status"], revoked.json()["status_reason"]) == ("revoked", "vendor breach")
    metadata = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.read_secret_metadata(
        path=secret_path(caller.workspace, created["id"]), mount_point="credentials"
    )["data"]
    assert [metadata["versions"][v]["destroyed"] for v in ("1", "2")] == [True, True]
    assert sorted(metadata["versions"]) == ["1", "2"]  # the metadata is kept for audit
    for method, path, body in (
        ("POST", "/reveal", None),
        ("PUT", "", {"label": "x"}),
        ("POST", "/enable", None),
        ("POST", "/disable", None),
        ("POST", "/versions/1/restore", None),
    ):
        response = await client.request(method, f"{API}/{created['id']}{path}", json=body, headers=caller.headers)
        assert response.status_code == 409, (method, path)
    assert (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json()["status"] == "revoked"
    assert (await client.get(API, params={"status": "revoked"}, headers=caller.headers)).json()["total"] == 1


async def test_expiry_is_computed_from_expires_at(client: httpx.AsyncClient, caller: Caller) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    expired = await create(client, caller, expires_at=past)
    from_secret = await create(
        client, caller, auth_type="oauth_token", credentials={"access_token": "a", "expires_at": past}
    )
    fresh = await create(client, caller, expires_at=future)

    assert (expired["status"], from_secret["status"], fresh["status"]) == ("expired", "expired", "active")
    refused = await reveal(client, caller, expired["id"])
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("The credential expired at ")
    expired_ids = {
        c["id"]
        for c in (await client.get(API, params={"status": "expired"}, headers=caller.headers)).json()["credentials"]
    }
    active_ids = {
        c["id"]
        for c in (await client.get(API, params={"status": "active"}, headers=caller.headers)).json()["credentials"]
    }
    assert (expired_ids, active_ids) == ({expired["id"], from_secret["id"]}, {fresh["id"]})

    extended = await client.put(f"{API}/{expired['id']}", json={"expires_at": future}, headers=caller.headers)
    assert extended.json()["status"] == "active"
    assert (await reveal(client, caller, expired["id"])).status_code == 200


# --- soft delete -------------------------------------------------------------------------------------------------


async def test_delete_then_restore_within_the_window(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, credentials={"api_key": "keep-me"})

    assert (await client.delete(f"{API}/{created['id']}", headers=caller.headers)).status_code == 200
    assert (await client.get(API, headers=caller.headers)).json()["total"] == 0
    assert (await reveal(client, caller, created["id"])).status_code == 404

    restored = await client.post(f"{API}/{created['id']}/restore", headers=caller.headers)
    assert restored.status_code == 200
    assert restored.json()["id"] == created["id"]
    assert (await reveal(client, caller, created["id"])).json()["credentials"] == {"api_key": "keep-me"}
    again = await client.post(f"{API}/{created['id']}/restore", headers=caller.headers)
    assert (again.status_code, again.json()) == (404, {"detail": "Credential not found"})


async def test_another_workspace_cannot_restore(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    owner, intruder = await make_caller(), await make_caller()
    created = await create(client, owner)
    await client.delete(f"{API}/{created['id']}", headers=owner.headers)

    response = await client.post(f"{API}/{created['id']}/restore", headers=intruder.headers)

    assert (response.status_code, response.json()) == (404, {"detail": "Credential not found"})


@pytest.mark.e2e
async def test_if_match_holds_across_two_service_instances(
    client: httpx.AsyncClient, caller: Caller, served: str
) -> None:
    """Two instances (this process and a credctl serve process) on one database and Vault: one writer wins."""
    created = await client.post(API, json=new_credential(), headers=caller.headers)
    cid, tag = created.json()["id"], created.headers["etag"]

    async with httpx.AsyncClient(base_url=served, timeout=10) as other:
        results = await asyncio.gather(
            client.put(
                f"{API}/{cid}", json={"credentials": {"api_key": "here"}}, headers={**caller.headers, "If-Match": tag}
            ),
            other.put(
                f"{API}/{cid}", json={"credentials": {"api_key": "there"}}, headers={**caller.headers, "If-Match": tag}
            ),
        )

    assert sorted(r.status_code for r in results) == [200, 412]
    assert (await reveal(client, caller, cid)).json()["version"] == 2


async def test_credctl_purge_destroys_only_what_is_past_the_window(
    client: httpx.AsyncClient, caller: Caller, settings: Settings, bao: BaoServer
) -> None:
    created = await create(client, caller)
    await client.delete(f"{API}/{created['id']}", headers=caller.headers)
    kv = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2
    path = secret_path(caller.workspace, created["id"])

    def purge(retention: str) -> str:
        result = subprocess.run(
            [CREDCTL, "purge"],
            env=env_for(settings, CREDENTIALS_DELETE_RETENTION=retention),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert purge("3600") == "purged 0 deleted credential(s) past the retention window\n"
    assert kv.read_secret_metadata(path=path, mount_point="credentials")["data"]["current_version"] == 1

    assert re.fullmatch(r"purged [1-9]\d* deleted credential\(s\) past the retention window\n", purge("0"))
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=path, mount_point="credentials")
    assert (await client.post(f"{API}/{created['id']}/restore", headers=caller.headers)).status_code == 404


async def test_restore_respects_credential_scope(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    admin = await make_caller(permissions=("read", "write", "reveal", "admin"))
    plain = await make_caller(admin.workspace, ("read", "write"))
    created = await create(client, admin, credential_scope="user", user_id="usr_someone")
    await client.delete(f"{API}/{created['id']}", headers=admin.headers)

    refused = await client.post(f"{API}/{created['id']}/restore", headers=plain.headers)
    assert (refused.status_code, refused.json()) == (404, {"detail": "Credential not found"})
    assert (await client.post(f"{API}/{created['id']}/restore", headers=admin.headers)).status_code == 200


async def test_revoke_destroys_a_version_written_above_the_served_one(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer, settings: Settings
) -> None:
    from vault.store import CallContext, SecretStore

    created = await create(client, caller)
    store = SecretStore.connect(settings.vault.addr, settings.vault.token or "", workers=1, timeout=5)
    try:
        ctx = CallContext(request_id="test", actor=caller.key_id, workspace=caller.workspace)
        # An update that reached Vault but never Postgres: version 2 exists, the row still serves 1.
        await store.update(ctx, created["id"], Secret(b'{"api_key":"unserved"}'), expected_version=1)
    finally:
        await store.aclose()

    assert (await client.post(f"{API}/{created['id']}/revoke", headers=caller.headers)).status_code == 200

    versions = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.read_secret_metadata(
        path=secret_path(caller.workspace, created["id"]), mount_point="credentials"
    )["data"]["versions"]
    assert {number: v["destroyed"] for number, v in versions.items()} == {"1": True, "2": True}
