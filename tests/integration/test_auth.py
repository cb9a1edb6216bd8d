"""Who may call what: API keys and user tokens, X-Workspace-Id, API keys over the API, the session; 401/403 bodies."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from db.tables import ApiKey
from devtools.stack import BaoServer
from tests.support.api import API, Caller, MakeCaller, new_credential
from tests.support.servers import running_app, settings_for
from tests.support.tokens import AUDIENCE, HS256_SECRET, ISSUER, mint, public_pem, rsa_key, stranger_rsa_key

KEYS = "/api/v1/api-keys"
SESSION = "/api/v1/auth/session"

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


# --- user tokens ---------------------------------------------------------------------------------------------------


def user_headers(sub: str, workspaces: object, **options: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(sub, workspaces, **options)}"}


@pytest.mark.parametrize(
    "options",
    [{"algorithm": "HS256"}, {"algorithm": "RS256", "kid": "rsa-1"}, {"algorithm": "ES256", "kid": "ec-1"}],
    ids=["hs256", "rs256", "es256"],
)
async def test_a_user_token_is_accepted_with_each_algorithm_and_created_by_is_its_sub(
    client: httpx.AsyncClient, options: dict[str, object]
) -> None:
    headers = user_headers("usr_alg", {"wsp_alg": "member"}, **options)
    created = await client.post(API, json=new_credential(), headers=headers)
    assert created.status_code == 200, created.text
    assert (created.json()["workspace_id"], created.json()["created_by"]) == ("wsp_alg", "usr_alg")


async def test_the_supabase_prefix_is_accepted_and_reported(client: httpx.AsyncClient) -> None:
    token = mint("usr_sb", [{"id": "wsp_sb", "role": "viewer"}])
    session = await client.get(SESSION, headers={"Authorization": f"Bearer supabase_{token}"})
    assert session.status_code == 200
    assert (session.json()["auth_type"], session.json()["auth_provider"]) == ("bearer_token", "supabase")


async def test_a_user_of_several_workspaces_must_name_one(client: httpx.AsyncClient) -> None:
    headers = user_headers("usr_multi", {"wsp_one": "owner", "wsp_two": "viewer"})

    missing = await client.get(API, headers=headers)
    one = await client.get(SESSION, headers={**headers, "X-Workspace-Id": "wsp_one"})
    two = await client.get(SESSION, headers={**headers, "X-Workspace-Id": "wsp_two"})
    other = await client.get(API, headers={**headers, "X-Workspace-Id": "wsp_three"})

    assert (missing.status_code, missing.json()) == (
        400,
        {"detail": "X-Workspace-Id is required: the user belongs to several workspaces"},
    )
    assert "www-authenticate" not in missing.headers
    assert one.json()["workspace_user"] == {
        "role": "owner",
        "is_owner": True,
        "permissions": ["read", "write", "reveal", "admin", "use"],
        "status": "active",
    }
    assert two.json()["workspace_user"] == {
        "role": "viewer",
        "is_owner": False,
        "permissions": ["read"],
        "status": "active",
    }
    assert (other.status_code, other.json()) == (
        403,
        {"detail": "The user is not a member of the workspace named by X-Workspace-Id"},
    )


async def test_a_user_in_no_workspace_is_refused(client: httpx.AsyncClient) -> None:
    for workspaces in (None, {}, [{"id": "wsp_x", "role": "superuser"}]):
        response = await client.get(SESSION, headers=user_headers("usr_none", workspaces))
        assert (response.status_code, response.json()) == (403, {"detail": "The user is not a member of any workspace"})


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": None}, "Invalid token"),
        ({"sub": None}, "Invalid token"),
        ({"sub": 42}, "Invalid token"),
        ({"sub": "u" * 256}, "Invalid token"),
        ({"aud": None}, "Invalid token"),
        ({"iss": None}, "Invalid token"),
        ({"workspaces": "wsp_a"}, "Invalid token"),
        ({"lifetime": -20}, None),  # expired 20 s ago: within the 30 s leeway
        ({"lifetime": -40}, "Token has expired"),
        ({"nbf": 20}, None),
        ({"nbf": 40}, "Invalid token"),
        ({"iat": 40}, "Invalid token"),
    ],
    ids=[
        "no-exp",
        "no-sub",
        "numeric-sub",
        "long-sub",
        "no-aud",
        "no-iss",
        "malformed-workspaces",
        "expired-within-leeway",
        "expired",
        "nbf-within-leeway",
        "nbf-future",
        "iat-future",
    ],
)
async def test_token_claims_are_checked_with_a_small_leeway(
    client: httpx.AsyncClient, claims: dict[str, object], detail: str | None
) -> None:
    options = dict(claims)
    lifetime = options.pop("lifetime", 600)
    for name in ("nbf", "iat"):  # given as seconds from now, resolved when the test runs
        if name in options:
            options[name] = int(time.time()) + int(str(options[name]))
    token = mint("usr_claims", {"wsp_claims": "member"}, lifetime=int(str(lifetime)), **options)
    response = await client.get(SESSION, headers={"Authorization": f"Bearer {token}"})
    if detail is None:
        assert response.status_code == 200, response.text
    else:
        assert (response.status_code, response.json()) == (401, {"detail": detail})
        assert response.headers["www-authenticate"] == "Bearer"


async def test_no_algorithm_confusion_a_public_key_is_never_an_hmac_secret(client: httpx.AsyncClient) -> None:
    pem = public_pem(rsa_key())  # the trusted RSA key's public half, which anyone may know
    payload = {
        "sub": "usr_evil",
        "exp": int(time.time()) + 60,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "workspaces": {"w": "owner"},
    }
    forged = hmac_token(payload, pem)

    response = await client.get(SESSION, headers={"Authorization": f"Bearer {forged}"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})


def hmac_token(payload: dict[str, object], secret: bytes) -> str:
    """An HS256 token signed with any bytes (PyJWT itself refuses a PEM as an HMAC secret)."""
    import base64
    import hashlib
    import hmac as hmac_module
    import json

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac_module.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


async def test_an_unknown_key_id_is_refused(client: httpx.AsyncClient) -> None:
    token = mint("usr_kid", {"wsp_kid": "owner"}, algorithm="RS256", kid="rsa-unknown")
    response = await client.get(SESSION, headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})


async def test_user_tokens_are_refused_when_none_are_configured(database_url: str, bao: BaoServer) -> None:
    async with running_app(settings_for(database_url, bao)) as plain:
        response = await plain.get(SESSION, headers=user_headers("usr_x", {"wsp_x": "owner"}))
    assert (response.status_code, response.json()) == (401, {"detail": "User tokens are not accepted by this service"})


# --- API keys over the API ------------------------------------------------------------------------------------------


async def test_a_key_made_over_the_api_is_shown_once_and_works_until_revoked(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(permissions=("read", "write", "reveal", "admin"))
    made = await client.post(KEYS, json={"label": "ci", "permissions": ["read", "write"]}, headers=admin.headers)
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    new = made.json()
    assert new["created_by"] == admin.key_id
    headers = {"Authorization": f"Bearer {new['secret']}"}
    assert (await client.get(API, headers=headers)).status_code == 200

    listed = (await client.get(KEYS, headers=admin.headers)).json()
    assert "secret" not in json.dumps(listed)
    assert new["secret"] not in json.dumps(listed)
    assert [k["id"] for k in listed["api_keys"]] == [new["id"], admin.key_id]
    assert listed["api_keys"][0] == {k: v for k, v in new.items() if k != "secret"}

    revoked = await client.delete(f"{KEYS}/{new['id']}", headers=admin.headers)
    assert revoked.json()["status"] == "revoked"
    refused = await client.get(API, headers=headers)
    assert (refused.status_code, refused.json()) == (401, {"detail": "Invalid API key"})
    again = await client.delete(f"{KEYS}/{new['id']}", headers=admin.headers)
    assert (again.status_code, again.json()) == (404, {"detail": "API key not found"})
    assert [k["id"] for k in (await client.get(KEYS, headers=admin.headers)).json()["api_keys"]] == [admin.key_id]


async def test_a_key_can_be_made_inactive_or_expiring(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    admin = await make_caller(permissions=("read", "admin"))
    soon = datetime.now(UTC) + timedelta(seconds=2)
    inactive = (await client.post(KEYS, json={"label": "off", "status": "inactive"}, headers=admin.headers)).json()
    expiring = (
        await client.post(KEYS, json={"label": "soon", "expires_at": soon.isoformat()}, headers=admin.headers)
    ).json()
    assert inactive["permissions"] == ["read"]  # the default: least privilege

    assert (await client.get(API, headers={"X-API-Key": inactive["secret"]})).status_code == 401
    assert (await client.get(API, headers={"X-API-Key": expiring["secret"]})).status_code == 200
    await ApiKey.update({ApiKey.expires_at: datetime.now(UTC)}).where(ApiKey.id == expiring["id"])
    assert (await client.get(API, headers={"X-API-Key": expiring["secret"]})).status_code == 401


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"label": "x", "permissions": []},
            {"loc": ["body", "permissions"], "msg": "Expected `array` of length >= 1", "type": "value_error"},
        ),
        ({"label": "x", "permissions": ["root"]}, None),
        (
            {"label": ""},
            {"loc": ["body", "label"], "msg": "String should have at least 1 character", "type": "string_too_short"},
        ),
        (
            {"label": "x", "expires_at": "2001-01-01T00:00:00+00:00"},
            {"loc": ["body", "expires_at"], "msg": "expires_at must be in the future", "type": "value_error"},
        ),
        ({"label": "x", "status": "revoked"}, None),
        (
            {"label": "x", "workspace_id": "wsp_other"},
            {"loc": ["body", "workspace_id"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
        ),
    ],
    ids=["no-permissions", "unknown-permission", "empty-label", "past-expiry", "bad-status", "foreign-workspace"],
)
async def test_key_creation_validates_its_body(
    client: httpx.AsyncClient, make_caller: MakeCaller, body: dict[str, object], error: dict[str, object] | None
) -> None:
    admin = await make_caller(permissions=("read", "admin"))
    response = await client.post(KEYS, json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    if error is not None:
        assert response.json() == {"detail": [error]}
    assert (await client.get(KEYS, headers=admin.headers)).json()["total"] == 1


async def test_a_caller_grants_only_the_permissions_it_holds(client: httpx.AsyncClient) -> None:
    admin_user = user_headers("usr_adm", {"wsp_grant": "admin"})
    made = await client.post(
        KEYS, json={"label": "all", "permissions": ["read", "write", "reveal", "admin"]}, headers=admin_user
    )
    assert (made.status_code, made.json()["created_by"]) == (200, "usr_adm")
    assert made.json()["permissions"] == ["read", "write", "reveal", "admin"]

    admin_only = {"Authorization": f"Bearer {made.json()['secret']}"}
    narrowed = await client.post(KEYS, json={"label": "n", "permissions": ["reveal"]}, headers=admin_only)
    assert narrowed.status_code == 200
    narrow_admin = await client.post(
        KEYS,
        json={"label": "a", "permissions": ["admin"]},
        headers={"Authorization": f"Bearer {narrowed.json()['secret']}"},
    )
    assert narrow_admin.status_code == 403


async def test_keys_of_another_workspace_cannot_be_listed_or_revoked(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    mine = await make_caller(permissions=("read", "admin"))
    theirs = await make_caller(permissions=("read", "admin"))
    for key_id in (theirs.key_id, "00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = await client.delete(f"{KEYS}/{key_id}", headers=mine.headers)
        assert (response.status_code, response.content) == (404, b'{"detail":"API key not found"}')
    assert [k["id"] for k in (await client.get(KEYS, headers=mine.headers)).json()["api_keys"]] == [mine.key_id]
    assert (await client.get(API, headers=theirs.headers)).status_code == 200


async def test_no_key_or_token_reaches_the_logs_or_error_bodies(
    client: httpx.AsyncClient, make_caller: MakeCaller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await make_caller(permissions=("read", "write", "reveal", "admin"))
    made = (await client.post(KEYS, json={"label": "l"}, headers=admin.headers)).json()
    presented = [
        admin.key,
        made["secret"],
        admin.key[:-4] + "AAAA",
        mint("usr_log", {"wsp_log": "owner"}, aud="wrong"),
        mint("usr_log", {"wsp_log": "owner"}, lifetime=-600),
        mint("usr_log", {"wsp_log": "owner"}, algorithm="RS256", key=stranger_rsa_key(), kid="rsa-1"),
    ]
    bodies = []
    for value in presented:
        for headers in ({"Authorization": f"Bearer {value}"}, {"X-API-Key": value}):
            bodies.append((await client.get(API, headers=headers)).text)
            bodies.append((await client.get(SESSION, headers={**headers, "X-Workspace-Id": "w" * 300})).text)
    text = caplog.text + "".join(bodies)
    for value in [*presented, HS256_SECRET, made["secret"].split("_", 2)[2]]:
        assert value not in text
    assert "user token refused: InvalidAudienceError" in caplog.text


# --- session --------------------------------------------------------------------------------------------------------


async def test_session_of_an_api_key(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(SESSION, headers=caller.headers)
    assert response.json() == {
        "user": None,
        "workspace": {"id": caller.workspace},
        "workspace_user": {
            "role": None,
            "is_owner": False,
            "permissions": ["read", "write", "reveal"],
            "status": "active",
        },
        "auth_type": "api_key",
        "auth_provider": "api_key",
        "api_key": {"id": caller.key_id, "label": None},
    }


async def test_session_of_a_user_carries_their_name_and_email(client: httpx.AsyncClient) -> None:
    headers = user_headers(
        "usr_sess", {"wsp_sess": "member"}, email="ada@example.test", user_metadata={"full_name": "Ada"}
    )
    response = await client.get(SESSION, headers=headers)
    assert response.json() == {
        "user": {"id": "usr_sess", "email": "ada@example.test", "name": "Ada"},
        "workspace": {"id": "wsp_sess"},
        "workspace_user": {
            "role": "member",
            "is_owner": False,
            "permissions": ["read", "write", "reveal", "use"],
            "status": "active",
        },
        "auth_type": "bearer_token",
        "auth_provider": "jwt",
        "api_key": None,
    }
