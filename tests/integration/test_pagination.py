"""Keyset pagination (``cursor`` / ``next_cursor``) beside Mielto's ``skip``/``limit``."""

from __future__ import annotations

import httpx

from tests.support.api import API, Caller, MakeCaller, new_credential


async def ids_by_cursor(client: httpx.AsyncClient, caller: Caller, limit: int) -> tuple[list[str], int]:
    """Every id, following next_cursor from the first page; and how many pages it took."""
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": limit}
    pages = 0
    while True:
        response = await client.get(API, params=params, headers=caller.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [c["id"] for c in body["credentials"]]
        if "next_cursor" not in body:
            return seen, pages
        params = {"limit": limit, "cursor": body["next_cursor"]}


async def test_cursor_pages_walk_the_same_order_as_skip_and_limit(client: httpx.AsyncClient, caller: Caller) -> None:
    for i in range(5):
        assert (await client.post(API, json=new_credential(label=f"c{i}"), headers=caller.headers)).status_code == 200
    by_offset = [
        c["id"] for c in (await client.get(API, params={"limit": 100}, headers=caller.headers)).json()["credentials"]
    ]

    by_cursor, pages = await ids_by_cursor(client, caller, limit=2)

    assert len(by_offset) == 5
    assert by_cursor == by_offset
    assert pages == 3  # 2 + 2 + 1: a short page has no next_cursor


async def test_a_row_created_while_paging_neither_repeats_nor_shifts_later_pages(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    for i in range(4):
        await client.post(API, json=new_credential(label=f"old{i}"), headers=caller.headers)
    first = (await client.get(API, params={"limit": 2}, headers=caller.headers)).json()
    await client.post(API, json=new_credential(label="new"), headers=caller.headers)

    second = (await client.get(API, params={"limit": 2, "cursor": first["next_cursor"]}, headers=caller.headers)).json()

    assert [c["label"] for c in first["credentials"]] == ["old3", "old2"]
    assert [c["label"] for c in second["credentials"]] == ["old1", "old0"]
    assert second["total"] == 5


async def test_a_cursor_is_applied_inside_the_callers_workspace(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    alice, bob = await make_caller(), await make_caller()
    await client.post(API, json=new_credential(label="b"), headers=bob.headers)
    for i in range(3):
        await client.post(API, json=new_credential(label=f"a{i}"), headers=alice.headers)
    cursor = (await client.get(API, params={"limit": 1}, headers=alice.headers)).json()["next_cursor"]

    # The cursor is a position in the order (alice's newest row); it reveals nothing and selects only bob's rows.
    bobs = (await client.get(API, params={"cursor": cursor}, headers=bob.headers)).json()

    assert [c["label"] for c in bobs["credentials"]] == ["b"]


async def test_a_cursor_the_service_did_not_issue_is_422(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(API, params={"cursor": "not-a-cursor"}, headers=caller.headers)

    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["query", "cursor"],
                    "msg": "Input should be a cursor returned as next_cursor",
                    "type": "cursor",
                }
            ]
        },
    )
