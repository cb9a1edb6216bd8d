"""Hostile input and identity (issue 16, points 3, 4, 5, 7, 8, 11 and 12): each answers a 4xx, writes nothing,
and never serves a secret it should not."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from typing import Any

import httpx
import pytest

from db.tables import ApiKey, Credential
from tests.support.api import API, MakeCaller, create, new_credential
from tests.support.tokens import mint

KEYS_API = "/api/v1/api-keys"
SESSION = "/api/v1/auth/session"


def bearer(token: str, workspace: str | bytes | None = None) -> dict[str, Any]:
    headers: dict[str, Any] = {"Authorization": f"Bearer {token}"}
    if workspace is not None:
        headers["X-Workspace-Id"] = workspace
    return headers


async def nothing_written() -> None:
    assert await Credential.count() == 0
    assert await ApiKey.count() == 0


# --- point 3: one workspace-id rule --------------------------------------------------------------------------------

BAD_WORKSPACE_IDS = ["..", ".", "a/b", "../x", "a b", "a|b", "wsp_é", "wsp\r\nX-Injected: 1", "-leading", "x" * 256]


@pytest.mark.parametrize("bad", BAD_WORKSPACE_IDS)
async def test_a_token_workspace_breaking_the_rule_is_ignored_and_writes_nothing(
    client: httpx.AsyncClient, bad: str
) -> None:
    token = mint(f"usr_{secrets.token_hex(4)}", {bad: "owner"})

    created = await client.post(API, json=new_credential(), headers=bearer(token))
    key = await client.post(KEYS_API, json={"label": "x"}, headers=bearer(token))

    assert (created.status_code, created.json()) == (403, {"detail": "The user is not a member of any workspace"})
    assert (key.status_code, key.json()) == (403, {"detail": "The user is not a member of any workspace"})
    await nothing_written()


@pytest.mark.parametrize("bad", ["..", "a/b", "a b", "a|b", "wsp_\u00e9", "-x"])
async def test_x_workspace_id_breaking_the_rule_is_a_422_for_tokens_and_keys(
    client: httpx.AsyncClient, make_caller: MakeCaller, bad: str
) -> None:
    token = mint(f"usr_{secrets.token_hex(4)}", {"wsp_ok": "owner", bad: "owner"})
    key = await make_caller()
    expected = {
        "detail": [
            {
                "loc": ["header", "X-Workspace-Id"],
                "msg": "a workspace id is 1-255 characters of letters, digits and _ . : - (starting with one)",
                "type": "string_pattern_mismatch",
            }
        ]
    }
    header: Any = bad.encode()  # raw bytes: httpx refuses non-ASCII text in a header

    for headers in (bearer(token, header), {**key.headers, "X-Workspace-Id": header}):
        response = await client.post(API, json=new_credential(), headers=headers)
        assert (response.status_code, response.json()) == (422, expected)
    assert await Credential.count() == 0
    mixed = await client.post(API, json=new_credential(), headers=bearer(token))  # the good entry still counts
    assert mixed.status_code == 200
    assert mixed.json()["workspace_id"] == "wsp_ok"


# --- point 4: 4xx rather than 500 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["label", "description", "provider", "user_id", "credential_scope"])
async def test_nul_in_a_text_field_is_a_422_and_writes_nothing(
    client: httpx.AsyncClient, make_caller: MakeCaller, field: str
) -> None:
    caller = await make_caller()

    response = await client.post(API, json=new_credential(**{field: "a\x00b"}), headers=caller.headers)

    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", field],
                    "msg": "String should not contain NUL characters",
                    "type": "string_pattern_mismatch",
                }
            ]
        },
    )
    assert await Credential.count() == 0


async def test_nul_in_an_update_or_a_reason_is_a_422(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    caller = await make_caller()
    created = await create(client, caller)

    update = await client.put(f"{API}/{created['id']}", json={"label": "x\x00"}, headers=caller.headers)
    reason = await client.post(f"{API}/{created['id']}/disable", json={"reason": "\x00"}, headers=caller.headers)

    assert (update.status_code, reason.status_code) == (422, 422)
    after = (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    assert (after["label"], after["status"]) == (created["label"], "active")


@pytest.mark.parametrize("param", ["search", "status"])
async def test_nul_in_a_list_filter_is_a_422(client: httpx.AsyncClient, make_caller: MakeCaller, param: str) -> None:
    caller = await make_caller()

    response = await client.get(API, params={param: "a\x00"}, headers=caller.headers)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", param]


@pytest.mark.parametrize("skip", [2**63, 2**64, 10**30])
async def test_skip_beyond_64_bits_is_a_422(client: httpx.AsyncClient, make_caller: MakeCaller, skip: int) -> None:
    caller = await make_caller()
    created = await create(client, caller)

    listed = await client.get(API, params={"skip": str(skip)}, headers=caller.headers)
    versions = await client.get(f"{API}/{created['id']}/versions", params={"skip": str(skip)}, headers=caller.headers)

    for response in (listed, versions):
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", "skip"]
    assert (await client.get(API, params={"skip": str(2**63 - 1)}, headers=caller.headers)).status_code == 200


async def test_a_body_nested_forty_thousand_deep_is_a_422(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    caller = await make_caller()
    body = b'{"label": "x", "auth_type": "custom", "credential_scope": "workspace", "credentials": '
    body += b'{"a":' * 40_000 + b"1" + b"}" * 40_000 + b"}"
    assert len(body) < 256 * 1024

    response = await client.post(API, content=body, headers={**caller.headers, "content-type": "application/json"})

    assert (response.status_code, response.json()) == (
        422,
        {"detail": [{"loc": ["body"], "msg": "The body nests too deeply", "type": "too_deep"}]},
    )
    assert await Credential.count() == 0


@pytest.mark.parametrize(
    ("sub", "workspaces"),
    [
        ("usr_1", {"wsp_1": ["owner"]}),
        ("usr_1", {"wsp_1": {"role": "owner"}}),
        ("usr_1", [{"id": ["wsp_1"], "role": "owner"}]),
        ("usr_1", [{"id": "wsp_1", "role": {"x": 1}}]),
        ("usr_\u7528\u6237", {"wsp_1": "owner"}),
        ("usr_1\r\nX-Injected: 1", {"wsp_1": "owner"}),
        ("usr_1\x00", {"wsp_1": "owner"}),
        (" usr_1", {"wsp_1": "owner"}),
    ],
)
async def test_unusable_workspaces_or_sub_refuse_the_token(
    client: httpx.AsyncClient, sub: str, workspaces: Any
) -> None:
    token = mint(sub, workspaces)

    for response in (
        await client.post(API, json=new_credential(), headers=bearer(token)),
        await client.post(KEYS_API, json={"label": "x"}, headers=bearer(token)),
        await client.get(SESSION, headers=bearer(token)),
    ):
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})
    await nothing_written()


# --- point 11: numeric claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"exp": 1e30},
        {"exp": 1e308},
        {"exp": int(time.time()) + 400 * 86_400},
        {"iat": "0"},
        {"nbf": str(int(time.time()))},
    ],
    ids=["exp-digits", "exp-1e30", "exp-1e308", "exp-400-days", "iat-string", "nbf-string"],
)
async def test_absurd_or_non_numeric_dates_refuse_the_token(client: httpx.AsyncClient, claims: dict[str, Any]) -> None:
    token = mint("usr_1", {"wsp_1": "owner"}, **claims)

    response = await client.get(SESSION, headers=bearer(token))

    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})


async def test_a_float_exp_within_the_lifetime_is_accepted(client: httpx.AsyncClient) -> None:
    token = mint("usr_1", {"wsp_1": "owner"}, exp=time.time() + 600.5)

    assert (await client.get(SESSION, headers=bearer(token))).status_code == 200


# --- point 5: reveal racing revoke ----------------------------------------------------------------------------------


async def test_reveal_and_masked_view_racing_revoke_answer_409_never_503(
    client: httpx.AsyncClient, make_caller: MakeCaller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    caller = await make_caller()
    outcomes: dict[int, int] = {}
    for _ in range(40):
        created = await create(client, caller, credentials={"api_key": f"sk_live_{secrets.token_hex(16)}"})
        url = f"{API}/{created['id']}"
        secret = "sk_live_"

        async def revoke(url: str = url) -> float:
            response = await client.post(f"{url}/revoke", headers=caller.headers)
            assert response.status_code == 200, response.text
            return time.monotonic()

        async def read(call: Any) -> tuple[httpx.Response, float]:
            response = await call
            return response, time.monotonic()

        revoked_at, *reads = await asyncio.gather(
            revoke(),
            read(client.post(f"{url}/reveal", headers=caller.headers)),
            read(client.post(f"{url}/reveal", headers=caller.headers)),
            read(client.get(url, params={"include": "masked"}, headers=caller.headers)),
        )
        after = await client.post(f"{url}/reveal", headers=caller.headers)

        for response, _ in reads:
            outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
            assert response.status_code in {200, 409}, response.text
            if response.status_code == 409:
                assert response.json() == {"detail": "The credential is revoked"}
        for response, finished in reads[:2]:
            if response.status_code == 200:
                assert secret in response.text
                assert finished <= revoked_at + 0.5  # served before (or as) the revoke returned
        assert (after.status_code, after.json()) == (409, {"detail": "The credential is revoked"})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert set(outcomes) <= {200, 409}


# --- point 7: the masked view through the API ---------------------------------------------------------------------


async def test_a_viewer_sees_short_passwords_and_custom_fields_fully_masked(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    writer = await make_caller()
    viewer = await make_caller(writer.workspace, ("read",))
    basic = await create(
        client, writer, auth_type="basic_auth", credentials={"username": "svc", "password": "Passw0rd!"}
    )
    custom = await create(
        client, writer, auth_type="custom", credentials={"client_id": "cid-12345", "public_key": "pk-live-1"}
    )

    shown_basic = (
        await client.get(f"{API}/{basic['id']}", params={"include": "masked"}, headers=viewer.headers)
    ).json()
    shown_custom = (
        await client.get(f"{API}/{custom['id']}", params={"include": "masked"}, headers=viewer.headers)
    ).json()

    assert shown_basic["masked_credentials"] == {"username": "svc", "password": "*********"}
    assert shown_custom["masked_credentials"] == {"client_id": "*********", "public_key": "*********"}


# --- point 8: owner and scope changes, as an access matrix ----------------------------------------------------------

PRIVATE = "The 'admin' permission is needed to make a workspace credential private"
ANOTHER = "The 'admin' permission is needed for a 'user' credential of another user"
RESCOPE_MATRIX = [
    # (caller, scope before, whom user_id names, new scope, expected status)
    ("named-member", "workspace", "named", "user", 403),
    ("named-member", "workspace", "named", "workspace_member", 403),
    ("other-member", "workspace", "named", "user", 403),
    ("write-key", "workspace", "named", "user", 403),
    ("viewer", "workspace", "named", "user", 403),
    ("admin-key", "workspace", "named", "user", 200),
    ("owner", "workspace", "named", "user", 200),
    ("named-member", "user", "named", "workspace_member", 200),
    ("named-member", "user", "named", "workspace", 200),
    ("other-member", "user", "named", "workspace", 404),
    ("write-key", "user", "named", "workspace", 404),
    ("owner", "user", "named", "workspace", 200),
]


@pytest.mark.parametrize(("who", "before", "named", "after", "status"), RESCOPE_MATRIX)
async def test_who_may_change_the_scope(
    client: httpx.AsyncClient, make_caller: MakeCaller, who: str, before: str, named: str, after: str, status: int
) -> None:
    workspace = f"wsp_{secrets.token_hex(4)}"
    admin = await make_caller(workspace, ("read", "write", "reveal", "admin"))
    subs = {"named-member": f"usr_named_{secrets.token_hex(3)}", "other-member": f"usr_other_{secrets.token_hex(3)}"}
    callers = {
        "named-member": bearer(mint(subs["named-member"], {workspace: "member"})),
        "other-member": bearer(mint(subs["other-member"], {workspace: "member"})),
        "owner": bearer(mint(f"usr_owner_{secrets.token_hex(3)}", {workspace: "owner"})),
        "viewer": bearer(mint(subs["named-member"], {workspace: "viewer"})),
        "write-key": (await make_caller(workspace, ("read", "write"))).headers,
        "admin-key": admin.headers,
    }
    created = await create(client, admin, credential_scope=before, user_id=subs["named-member"])

    response = await client.put(f"{API}/{created['id']}", json={"credential_scope": after}, headers=callers[who])

    assert response.status_code == status, response.text
    stored = (await client.get(f"{API}/{created['id']}", headers=admin.headers)).json()
    if status == 200:
        assert (response.json()["credential_scope"], stored["credential_scope"]) == (after, after)
    else:
        assert stored["credential_scope"] == before
    if status == 403:
        detail = {"named-member": PRIVATE, "viewer": "The 'viewer' role lacks the 'write' permission"}.get(who, ANOTHER)
        assert response.json() == {"detail": detail}
    assert stored["user_id"] == subs["named-member"]  # no PUT changes the owner


async def test_a_put_cannot_change_the_owner(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    caller = await make_caller(permissions=("read", "write", "admin"))
    created = await create(client, caller, credential_scope="user", user_id="usr_a")

    response = await client.put(f"{API}/{created['id']}", json={"user_id": "usr_b"}, headers=caller.headers)

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"


# --- point 12: versions are paged ---------------------------------------------------------------------------------


async def test_versions_are_paged(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    caller = await make_caller()
    created = await create(client, caller)
    for n in range(4):
        updated = await client.put(
            f"{API}/{created['id']}", json={"credentials": {"api_key": f"sk_{n}"}}, headers=caller.headers
        )
        assert updated.status_code == 200
    url = f"{API}/{created['id']}/versions"

    default = (await client.get(url, headers=caller.headers)).json()
    first = (await client.get(url, params={"limit": 2}, headers=caller.headers)).json()
    second = (await client.get(url, params={"limit": 2, "skip": 2}, headers=caller.headers)).json()
    too_many = await client.get(url, params={"limit": 1001}, headers=caller.headers)

    assert [v["version"] for v in default["versions"]] == [5, 4, 3, 2, 1]
    assert (default["total"], default["page"], default["size"]) == (5, 1, 100)
    assert [v["version"] for v in first["versions"]] == [5, 4]
    assert [v["version"] for v in second["versions"]] == [3, 2]
    assert (second["total"], second["page"], second["size"]) == (5, 2, 2)
    assert first["versions"][0]["current"] is True
    assert too_many.status_code == 422


async def test_a_reveal_that_read_vault_before_a_revoke_committed_does_not_serve_the_secret(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    """Deterministic: the test holds the row lock as a revoke does, lets the reveal read Vault and reach its
    ``last_used_at`` update (where it waits on the lock), then commits the revoke."""
    caller = await make_caller()
    created = await create(client, caller)
    cid = created["id"]

    async with Credential._meta.db.transaction():
        await Credential.raw("SELECT id FROM credential WHERE id = {} FOR UPDATE", cid)
        # A fresh context: the reveal must not run inside this test's transaction.
        reveal = asyncio.create_task(
            client.post(f"{API}/{cid}/reveal", headers=caller.headers), context=contextvars.Context()
        )
        await asyncio.sleep(1.5)
        assert not reveal.done()
        await Credential.raw("UPDATE credential SET status = 'revoked' WHERE id = {}", cid)
    response = await reveal

    assert (response.status_code, response.json()) == (409, {"detail": "The credential is revoked"})
