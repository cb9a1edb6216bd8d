"""Reads and deletes of one credential by id share statements under load (``db.coalesce``, used by
``db.credentials.get`` and ``hide_reporting``): each caller still gets exactly what a statement of its own would
give it (its row, its 404, its event), never another workspace's row, and statements inside a transaction stay
on the transaction's connection."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from typing import Any

import httpx
import pytest

from db import credentials as rows
from db import database, outbox
from db.coalesce import Coalescer
from db.credentials import CredentialFilter
from tests.support.api import Caller, MakeCaller, create

BASE = "/api/v1/credentials"


async def _create(client: httpx.AsyncClient, caller: Caller, label: str) -> str:
    return str((await create(client, caller, label=label))["id"])


def _visible(caller: Caller, cid: str) -> CredentialFilter:
    return CredentialFilter(workspace_id=caller.workspace, shared_scopes=("workspace",), id=uuid.UUID(cid))


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement ``db.credentials`` sends, with one shared statement under way at a time (the
    service allows four): the first item goes alone, and everything asked while it runs is shared."""
    sent: list[str] = []
    real = rows.fetch

    async def counting(sql: str, *args: Any) -> list[dict[str, Any]]:
        sent.append(sql)
        return await real(sql, *args)

    monkeypatch.setattr(rows, "fetch", counting)
    monkeypatch.setattr(rows, "Coalescer", functools.partial(Coalescer, max_in_flight=1))
    monkeypatch.setattr(rows, "_coalescers", {})
    return sent


async def test_concurrent_gets_share_statements_and_each_gets_its_own_row(
    client: httpx.AsyncClient, caller: Caller, statements: list[str]
) -> None:
    ids = [await _create(client, caller, f"service {i}") for i in range(20)]
    statements.clear()
    found = await asyncio.gather(*(rows.get(_visible(caller, cid)) for cid in ids))
    assert [str(row["id"]) if row else None for row in found] == ids
    assert [row["label"] for row in found if row] == [f"service {i}" for i in range(20)]
    assert len(statements) < len(ids)

    # And through the API: twenty concurrent gets, each answered with its own credential.
    answers = await asyncio.gather(*(client.get(f"{BASE}/{cid}", headers=caller.headers) for cid in ids))
    assert [(a.status_code, a.json()["id"]) for a in answers] == [(200, cid) for cid in ids]


async def test_a_shared_moment_never_shows_a_caller_another_workspaces_row(
    client: httpx.AsyncClient, make_caller: MakeCaller, statements: list[str]
) -> None:
    alice, bob = await make_caller(), await make_caller()
    hers, his = await _create(client, alice, "hers"), await _create(client, bob, "his")
    statements.clear()
    found = await asyncio.gather(
        rows.get(_visible(alice, hers)),
        rows.get(_visible(bob, hers)),
        rows.get(_visible(bob, his)),
        rows.get(_visible(alice, his)),
    )
    assert [row["label"] if row else None for row in found] == ["hers", None, "his", None]
    assert len(statements) == 3  # the first alone, then one per workspace: different filters never share one

    answers = await asyncio.gather(
        client.get(f"{BASE}/{hers}", headers=alice.headers),
        client.get(f"{BASE}/{hers}", headers=bob.headers),
        client.get(f"{BASE}/{his}", headers=bob.headers),
        client.get(f"{BASE}/{his}", headers=alice.headers),
    )
    assert [a.status_code for a in answers] == [200, 404, 200, 404]


async def test_the_same_id_read_twice_at_once_answers_both(
    client: httpx.AsyncClient, caller: Caller, statements: list[str]
) -> None:
    cid, other = await _create(client, caller, "twice"), await _create(client, caller, "other")
    statements.clear()
    _, first, second = await asyncio.gather(
        rows.get(_visible(caller, other)), rows.get(_visible(caller, cid)), rows.get(_visible(caller, cid))
    )
    assert first is not None
    assert second is not None
    assert first["id"] == second["id"]
    assert len(statements) == 2  # the other alone, then the two reads of one id together


async def test_reads_for_updates_share_statements_with_gets_and_each_gets_a_row_of_its_own(
    client: httpx.AsyncClient, caller: Caller, statements: list[str]
) -> None:
    cid, other = await _create(client, caller, "shared"), await _create(client, caller, "other")
    statements.clear()
    _, versioned, again, plain = await asyncio.gather(
        rows.get(_visible(caller, other)),
        rows.get_versioned(_visible(caller, cid)),
        rows.get_versioned(_visible(caller, cid)),
        rows.get(_visible(caller, cid)),
    )
    assert len(statements) == 2  # the other alone, then the three reads of one id together
    assert versioned is not None
    assert again is not None
    assert plain is not None
    assert versioned[1] == again[1]  # the same row version (xmin), each popped from its own copy of the row
    assert versioned[0] == again[0] == plain
    assert "row_version" not in plain

    # Concurrent updates (each a versioned read, then a write at that version): each lands, none is lost.
    ids = [cid, *[await _create(client, caller, f"more {i}") for i in range(7)]]
    answers = await asyncio.gather(
        *(client.put(f"{BASE}/{c}", json={"label": f"renamed {i}"}, headers=caller.headers) for i, c in enumerate(ids))
    )
    assert [a.status_code for a in answers] == [200] * 8
    found = await asyncio.gather(*(rows.get(_visible(caller, c)) for c in ids))
    assert [row["label"] for row in found if row] == [f"renamed {i}" for i in range(8)]


class _RollBack(Exception):
    pass


async def _update_and_read_inside(cid: str, visible: CredentialFilter) -> None:
    async with database.transaction():
        await rows.update(uuid.UUID(cid), {"label": "inside"})
        # On another connection (a shared statement) it would see the committed label, "before".
        inside = await rows.get(visible)
        assert inside is not None
        assert inside["label"] == "inside"
        raise _RollBack


async def test_a_read_inside_a_transaction_sees_the_transactions_own_writes(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = await _create(client, caller, "before")
    visible = _visible(caller, cid)
    with pytest.raises(_RollBack):
        await _update_and_read_inside(cid, visible)
    after = await rows.get(visible)
    assert after is not None
    assert after["label"] == "before"


async def test_a_coalesced_read_sees_a_write_that_committed_before_it_was_asked(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    ids = [await _create(client, caller, f"old {i}") for i in range(8)]
    for i, cid in enumerate(ids):
        response = await client.put(f"{BASE}/{cid}", json={"label": f"new {i}"}, headers=caller.headers)
        assert response.status_code == 200, response.text
    found = await asyncio.gather(*(rows.get(_visible(caller, cid)) for cid in ids))
    assert [row["label"] for row in found if row] == [f"new {i}" for i in range(8)]


async def test_concurrent_deletes_share_statements_and_each_records_its_own_event(
    client: httpx.AsyncClient, caller: Caller, statements: list[str]
) -> None:
    ids = [await _create(client, caller, f"gone {i}") for i in range(12)]
    statements.clear()
    answers = await asyncio.gather(*(client.delete(f"{BASE}/{cid}", headers=caller.headers) for cid in ids))
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"id": cid, "deleted": True}) for cid in ids]
    shared = [sql for sql in statements if sql.startswith("WITH req AS")]
    alone = [sql for sql in statements if sql.startswith("WITH changed AS")]
    assert len(shared) >= 1
    assert len(shared) + len(alone) < len(ids)
    for cid in ids:
        assert (await client.get(f"{BASE}/{cid}", headers=caller.headers)).status_code == 404
    deleted = [e for e in await outbox.of_workspace(caller.workspace) if e["type"] == "credential.deleted"]
    assert sorted(str(e["credential_id"]) for e in deleted) == sorted(ids)
    by_credential = {str(e["credential_id"]): _payload(e["payload"]) for e in deleted}
    request_ids = {a.headers["x-request-id"] for a in answers}
    for i, cid in enumerate(ids):
        data = by_credential[cid]["data"]
        assert data["label"] == f"gone {i}"  # this row's own fields, not a neighbour's
        assert data["auth_type"] == "api_key"
        assert data["actor"] == caller.key_id
    assert {by_credential[cid]["data"]["request_id"] for cid in ids} == request_ids


async def test_two_deletes_of_one_credential_at_once_answer_once_and_record_one_event(
    client: httpx.AsyncClient, caller: Caller, statements: list[str]
) -> None:
    cid, other = await _create(client, caller, "once"), await _create(client, caller, "other")
    statements.clear()
    first, *answers = await asyncio.gather(
        client.delete(f"{BASE}/{other}", headers=caller.headers),
        *(client.delete(f"{BASE}/{cid}", headers=caller.headers) for _ in range(3)),
    )
    assert first.status_code == 200
    assert sorted(a.status_code for a in answers) == [200, 404, 404]
    assert len([sql for sql in statements if sql.startswith("WITH req AS")]) == 1  # the three did share one
    deleted = [
        e
        for e in await outbox.of_workspace(caller.workspace)
        if e["type"] == "credential.deleted" and str(e["credential_id"]) == cid
    ]
    assert len(deleted) == 1
    winner = next(a for a in answers if a.status_code == 200)
    assert _payload(deleted[0]["payload"])["data"]["request_id"] == winner.headers["x-request-id"]


async def test_a_shared_delete_never_touches_another_workspaces_row(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    alice, bob = await make_caller(), await make_caller()
    hers, his = await _create(client, alice, "hers"), await _create(client, bob, "his")
    answers = await asyncio.gather(
        client.delete(f"{BASE}/{hers}", headers=bob.headers),
        client.delete(f"{BASE}/{his}", headers=alice.headers),
        client.delete(f"{BASE}/{his}", headers=bob.headers),
    )
    assert [a.status_code for a in answers] == [404, 404, 200]
    assert (await client.get(f"{BASE}/{hers}", headers=alice.headers)).status_code == 200
    assert [e["type"] for e in await outbox.of_workspace(alice.workspace)].count("credential.deleted") == 0


def _payload(payload: Any) -> Any:
    return json.loads(payload) if isinstance(payload, str) else payload
