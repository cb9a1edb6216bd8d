"""Workspace isolation: another workspace's credential (or API key) answers exactly as one that does not exist,
to API keys and to users alike."""

from __future__ import annotations

import httpx

from tests.support.api import API, MakeCaller, new_credential
from tests.support.tokens import mint

MISSING = "00000000-0000-4000-8000-000000000000"


async def test_other_workspace_cannot_see_list_change_reveal_or_delete(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    owner = await make_caller()
    intruder = await make_caller()
    created = (
        await client.post(API, json=new_credential(credentials={"api_key": "owner-only"}), headers=owner.headers)
    ).json()

    listed = (await client.get(API, headers=intruder.headers)).json()
    assert listed == {"credentials": [], "total": 0, "page": 1, "size": 100}
    searched = (await client.get(API, params={"search": "Stripe"}, headers=intruder.headers)).json()
    assert searched["total"] == 0

    for method, path, body in (
        ("GET", "", None),
        ("PUT", "", {"label": "hijacked", "credentials": {"api_key": "x"}}),
        ("POST", "/reveal", None),
        ("DELETE", "", None),
    ):
        theirs = await client.request(method, f"{API}/{created['id']}{path}", json=body, headers=intruder.headers)
        missing = await client.request(method, f"{API}/{MISSING}{path}", json=body, headers=intruder.headers)
        assert theirs.status_code == 404, method
        assert theirs.content == missing.content == b'{"detail":"Credential not found"}'
        assert sorted(k for k in theirs.headers if k != "x-request-id") == sorted(
            k for k in missing.headers if k != "x-request-id"
        )

    # Nothing changed for the owner.
    mine = (await client.get(f"{API}/{created['id']}", headers=owner.headers)).json()
    assert mine == created
    revealed = (await client.post(f"{API}/{created['id']}/reveal", headers=owner.headers)).json()
    assert revealed["credentials"] == {"api_key": "owner-only"}
    assert revealed["version"] == 1


async def test_a_user_of_another_workspace_meets_the_same_404_as_a_missing_id(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    owner = await make_caller(permissions=("read", "write", "reveal", "admin"))
    created = (await client.post(API, json=new_credential(), headers=owner.headers)).json()
    # Owner of another workspace, and owner of both but acting in the other one.
    strangers = [
        {"Authorization": f"Bearer {mint('usr_b', {'wsp_b_only': 'owner'})}"},
        {
            "Authorization": f"Bearer supabase_{mint('usr_ab', {owner.workspace: 'owner', 'wsp_b2': 'owner'})}",
            "X-Workspace-Id": "wsp_b2",
        },
    ]
    for headers in strangers:
        assert (await client.get(API, headers=headers)).json()["total"] == 0
        for method, path, body in (
            ("GET", "", None),
            ("PUT", "", {"label": "hijacked"}),
            ("POST", "/reveal", None),
            ("DELETE", "", None),
        ):
            theirs = await client.request(method, f"{API}/{created['id']}{path}", json=body, headers=headers)
            missing = await client.request(method, f"{API}/{MISSING}{path}", json=body, headers=headers)
            assert (theirs.status_code, theirs.content) == (404, b'{"detail":"Credential not found"}'), method
            assert theirs.content == missing.content
            assert sorted(k for k in theirs.headers if k != "x-request-id") == sorted(
                k for k in missing.headers if k != "x-request-id"
            )
        key = await client.delete(f"/api/v1/api-keys/{owner.key_id}", headers=headers)
        assert (key.status_code, key.content) == (404, b'{"detail":"API key not found"}')

    assert (await client.get(f"{API}/{created['id']}", headers=owner.headers)).json() == created
    assert (await client.get(API, headers=owner.headers)).json()["total"] == 1
