"""credential_scope: user credentials belong to their user_id; only that user and admin holders see them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
import pytest

from tests.support.api import API, MakeCaller, create, new_credential
from tests.support.tokens import mint

MISSING = "00000000-0000-4000-8000-000000000000"
NOT_FOUND = b'{"detail":"Credential not found"}'
ALLOWED = {
    "loc": ["body", "credential_scope"],
    "msg": "Input should be 'workspace', 'user' or 'workspace_member'",
    "type": "literal_error",
}


@dataclass(frozen=True)
class User:
    sub: str
    headers: dict[str, str]


def user(workspace: str, role: str) -> User:
    sub = f"usr_{role}_{secrets.token_hex(4)}"
    return User(sub, {"Authorization": f"Bearer {mint(sub, {workspace: role})}"})


@pytest.fixture
def workspace() -> str:
    return f"wsp_{secrets.token_hex(4)}"


OPERATIONS = [
    ("GET", "", None),
    ("POST", "/reveal", None),
    ("PUT", "", {"label": "taken over"}),
    ("DELETE", "", None),
]


@pytest.mark.parametrize("scope", ["user", "workspace_member"])
async def test_a_users_credential_is_invisible_to_other_members_viewers_and_plain_keys(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str, scope: str
) -> None:
    alice = user(workspace, "member")
    mine = await create(client, alice.headers, credential_scope=scope, credentials={"api_key": "alice-only"})
    assert (mine["user_id"], mine["created_by"]) == (alice.sub, alice.sub)
    key = await make_caller(workspace, ("read", "write", "reveal"))
    others = {"member": user(workspace, "member").headers, "viewer": user(workspace, "viewer").headers}
    others["key"] = key.headers

    for name, headers in others.items():
        listed = (await client.get(API, headers=headers)).json()
        assert listed == {"credentials": [], "total": 0, "page": 1, "size": 100}, name
        for method, path, body in OPERATIONS:
            theirs = await client.request(method, f"{API}/{mine['id']}{path}", json=body, headers=headers)
            missing = await client.request(method, f"{API}/{MISSING}{path}", json=body, headers=headers)
            if name == "viewer" and method != "GET":
                # The viewer lacks the permission: refused before anything is looked up.
                assert theirs.status_code == missing.status_code == 403, (name, method)
                continue
            assert (theirs.status_code, theirs.content) == (404, NOT_FOUND), (name, method)
            assert theirs.content == missing.content
            assert sorted(k for k in theirs.headers if k != "x-request-id") == sorted(
                k for k in missing.headers if k != "x-request-id"
            )

    # Untouched, and still Alice's.
    assert (await client.get(f"{API}/{mine['id']}", headers=alice.headers)).json() == mine
    revealed = await client.post(f"{API}/{mine['id']}/reveal", headers=alice.headers)
    assert revealed.json()["credentials"] == {"api_key": "alice-only"}


@pytest.mark.parametrize("who", ["owner", "admin", "admin-key"])
async def test_owners_admins_and_admin_keys_see_and_change_every_users_credentials(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str, who: str
) -> None:
    alice = user(workspace, "member")
    mine = await create(client, alice.headers, credential_scope="user", credentials={"api_key": "alice"})
    shared = await create(client, alice.headers, credential_scope="workspace")
    if who == "admin-key":
        headers = (await make_caller(workspace, ("read", "write", "reveal", "admin"))).headers
    else:
        headers = user(workspace, who).headers

    listed = (await client.get(API, headers=headers)).json()
    assert [c["id"] for c in listed["credentials"]] == [shared["id"], mine["id"]]
    assert (await client.get(f"{API}/{mine['id']}", headers=headers)).json() == mine
    revealed = (await client.post(f"{API}/{mine['id']}/reveal", headers=headers)).json()
    assert revealed["credentials"] == {"api_key": "alice"}
    updated = await client.put(f"{API}/{mine['id']}", json={"label": "checked"}, headers=headers)
    assert (updated.status_code, updated.json()["label"]) == (200, "checked")
    deleted = await client.delete(f"{API}/{mine['id']}", headers=headers)
    assert deleted.json() == {"id": mine["id"], "deleted": True}


async def test_workspace_credentials_are_for_everyone_in_the_workspace(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str
) -> None:
    shared = await create(client, user(workspace, "member").headers, credential_scope="workspace")
    assert shared["user_id"] is None  # no default owner outside the user scopes
    readers = [user(workspace, role).headers for role in ("owner", "admin", "member", "viewer")]
    readers.append((await make_caller(workspace, ("read",))).headers)
    for headers in readers:
        assert (await client.get(f"{API}/{shared['id']}", headers=headers)).json() == shared


async def test_a_user_token_defaults_user_id_to_the_caller_and_keeps_an_explicit_own_id(
    client: httpx.AsyncClient, workspace: str
) -> None:
    alice = user(workspace, "member")
    defaulted = await create(client, alice.headers, credential_scope="workspace_member")
    explicit = await create(client, alice.headers, credential_scope="user", user_id=alice.sub)
    assert defaulted["user_id"] == explicit["user_id"] == alice.sub


async def test_admins_may_create_a_credential_for_another_user_who_then_sees_it(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str
) -> None:
    bob = user(workspace, "member")
    by_owner = await create(client, user(workspace, "owner").headers, credential_scope="user", user_id=bob.sub)
    admin_key = await make_caller(workspace, ("write", "admin"))
    by_key = await create(client, admin_key.headers, credential_scope="workspace_member", user_id=bob.sub)

    listed = (await client.get(API, headers=bob.headers)).json()
    assert {c["id"] for c in listed["credentials"]} == {by_owner["id"], by_key["id"]}
    assert by_key["created_by"] == admin_key.key_id


@pytest.mark.parametrize("scope", ["user", "workspace_member"])
async def test_members_and_plain_keys_cannot_create_a_credential_for_another_user(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str, scope: str
) -> None:
    for headers in (user(workspace, "member").headers, (await make_caller(workspace, ("write",))).headers):
        response = await client.post(
            API, json=new_credential(credential_scope=scope, user_id="usr_bob"), headers=headers
        )
        assert response.status_code == 403
        assert response.json() == {
            "detail": f"The 'admin' permission is needed for a '{scope}' credential of another user"
        }


@pytest.mark.parametrize("scope", ["user", "workspace_member"])
async def test_an_api_key_must_name_the_user_of_a_user_credential(
    client: httpx.AsyncClient, make_caller: MakeCaller, scope: str
) -> None:
    admin_key = await make_caller(permissions=("write", "admin"))
    response = await client.post(API, json=new_credential(credential_scope=scope), headers=admin_key.headers)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "user_id"],
                "msg": f"user_id is required when credential_scope is '{scope}'",
                "type": "missing",
            }
        ]
    }


@pytest.mark.parametrize("scope", ["team", "Workspace", "", "users", "x" * 255])
async def test_other_scopes_are_refused_with_the_allowed_values(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str, scope: str
) -> None:
    key = await make_caller(workspace)
    created = await create(client, key.headers)
    for response in (
        await client.post(API, json=new_credential(credential_scope=scope), headers=key.headers),
        await client.post(API, json=new_credential(credential_scope=scope), headers=user(workspace, "owner").headers),
        await client.put(f"{API}/{created['id']}", json={"credential_scope": scope}, headers=key.headers),
    ):
        assert response.status_code == 422
        assert response.json() == {"detail": [ALLOWED]}
    assert (await client.get(API, headers=key.headers)).json()["total"] == 1


async def test_rescoping_follows_the_same_rules_as_creating(
    client: httpx.AsyncClient, make_caller: MakeCaller, workspace: str
) -> None:
    alice, bob = user(workspace, "member"), user(workspace, "member")
    unowned = await create(client, alice.headers, credential_scope="workspace")
    bobs = await create(client, user(workspace, "owner").headers, credential_scope="workspace", user_id=bob.sub)
    alices = await create(client, alice.headers, credential_scope="workspace", user_id=alice.sub)

    no_owner = await client.put(f"{API}/{unowned['id']}", json={"credential_scope": "user"}, headers=alice.headers)
    assert no_owner.status_code == 422
    assert no_owner.json()["detail"][0]["loc"] == ["body", "user_id"]
    not_hers = await client.put(f"{API}/{bobs['id']}", json={"credential_scope": "user"}, headers=alice.headers)
    assert not_hers.status_code == 403
    # Named on a shared credential, even by herself, she may not take it private (issue 16, point 8).
    hers = await client.put(f"{API}/{alices['id']}", json={"credential_scope": "user"}, headers=alice.headers)
    assert (hers.status_code, hers.json()) == (
        403,
        {"detail": "The 'admin' permission is needed to make a workspace credential private"},
    )
    by_owner = await client.put(
        f"{API}/{bobs['id']}", json={"credential_scope": "user"}, headers=user(workspace, "owner").headers
    )
    assert (by_owner.status_code, by_owner.json()["credential_scope"]) == (200, "user")

    # Now Bob's alone: Alice no longer sees it, Bob does.
    assert (await client.get(f"{API}/{bobs['id']}", headers=alice.headers)).status_code == 404
    assert (await client.get(f"{API}/{bobs['id']}", headers=bob.headers)).json()["credential_scope"] == "user"
