"""Metadata updates and deletes write without holding the row's lock: the row is read at a version (Postgres's
``xmin``) and written, with its event, by one statement that matches only that version
(``db.credentials.write_if_unchanged``); a row changed meanwhile is read again, and after a few tries the write
takes the lock as before. Nothing may be lost or doubled by that: these tests race writers on one row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx
import msgspec

from db import credentials as rows
from db import outbox
from db.credentials import CredentialFilter, State
from service.events import outbox as events
from service.events.types import EventType
from tests.support.api import Caller, valid_secret

BASE = "/api/v1/credentials"


async def _create(client: httpx.AsyncClient, caller: Caller, label: str = "stripe") -> str:
    body = {
        "label": label,
        "auth_type": "api_key",
        "credential_scope": "workspace",
        "credentials": valid_secret("api_key"),
    }
    response = await client.post(BASE, json=body, headers=caller.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _types(events_seen: list[dict[str, object]], credential_id: str) -> Counter[str]:
    return Counter(str(e["type"]) for e in events_seen if str(e["credential_id"]) == credential_id)


class _Shown(msgspec.Struct):
    """What an event takes from a credential."""

    id: uuid.UUID
    label: str
    auth_type: str
    provider: str
    status: str


async def test_a_write_at_a_stale_version_changes_nothing_and_records_no_event(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = await _create(client, caller)
    visible = CredentialFilter(workspace_id=caller.workspace, shared_scopes=("workspace",), id=uuid.UUID(cid))
    seen = await rows.get_versioned(visible)
    assert seen is not None
    row, version = seen
    origin = events.Origin(workspace_id=caller.workspace, actor="tester", request_id="req-stale")
    event = events.credential_record(EventType.credential_updated, origin, msgspec.convert(row, _Shown))

    await rows.update(uuid.UUID(cid), {"description": "written meanwhile"})  # another writer, between read and write
    assert not await rows.write_if_unchanged(uuid.UUID(cid), version, {"label": "stale"}, event)
    assert (await client.get(f"{BASE}/{cid}", headers=caller.headers)).json()["label"] == "stripe"
    assert _types(await outbox.of_workspace(caller.workspace), cid)[EventType.credential_updated.value] == 0

    fresh = await rows.get_versioned(visible)
    assert fresh is not None
    assert fresh[1] != version
    assert await rows.write_if_unchanged(uuid.UUID(cid), fresh[1], {"label": "fresh"}, event)
    assert (await client.get(f"{BASE}/{cid}", headers=caller.headers)).json()["label"] == "fresh"
    assert _types(await outbox.of_workspace(caller.workspace), cid)[EventType.credential_updated.value] == 1


async def test_a_delete_records_its_event_from_the_row_it_hid_and_none_when_it_hid_nothing(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = await _create(client, caller, label="to-go")
    await client.post(f"{BASE}/{cid}/disable", json={"reason": "paused"}, headers=caller.headers)
    visible = CredentialFilter(workspace_id=caller.workspace, shared_scopes=("workspace",), id=uuid.UUID(cid))
    origin = events.Origin(workspace_id=caller.workspace, actor="tester", request_id="req-hide")
    event = events.credential_record_of_row(EventType.credential_deleted, origin, uuid.UUID(cid))
    assert await rows.hide_reporting(visible, State.deleted, datetime.now(UTC), event)
    again = events.credential_record_of_row(EventType.credential_deleted, origin, uuid.UUID(cid))
    assert not await rows.hide_reporting(visible, State.deleted, datetime.now(UTC), again)
    [deleted] = [
        e for e in await outbox.of_workspace(caller.workspace) if e["type"] == EventType.credential_deleted.value
    ]
    payload = deleted["payload"] if isinstance(deleted["payload"], dict) else msgspec.json.decode(deleted["payload"])
    assert payload["type"] == EventType.credential_deleted.value
    assert {k: payload["data"][k] for k in ("credential_id", "label", "auth_type", "provider", "status")} == {
        "credential_id": cid,
        "label": "to-go",
        "auth_type": "api_key",
        "provider": "custom",
        "status": "inactive",
    }
    assert (payload["data"]["request_id"], payload["data"]["actor"]) == ("req-hide", "tester")


async def test_concurrent_updates_of_one_credential_all_land_each_with_its_event(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = await _create(client, caller)
    labels = [f"label-{n}" for n in range(24)]
    answers = await asyncio.gather(
        *(client.put(f"{BASE}/{cid}", json={"label": label}, headers=caller.headers) for label in labels)
    )
    assert [a.status_code for a in answers] == [200] * len(labels)
    assert sorted(a.json()["label"] for a in answers) == sorted(labels)
    final = (await client.get(f"{BASE}/{cid}", headers=caller.headers)).json()["label"]
    assert final in labels
    assert _types(await outbox.of_workspace(caller.workspace), cid)[EventType.credential_updated.value] == len(labels)


async def test_concurrent_deletes_of_one_credential_hide_it_once(client: httpx.AsyncClient, caller: Caller) -> None:
    cid = await _create(client, caller)
    answers = await asyncio.gather(*(client.delete(f"{BASE}/{cid}", headers=caller.headers) for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [200] + [404] * 11
    assert _types(await outbox.of_workspace(caller.workspace), cid)[EventType.credential_deleted.value] == 1
    assert (await client.get(f"{BASE}/{cid}", headers=caller.headers)).status_code == 404


async def test_updates_racing_a_delete_either_land_before_it_or_find_nothing(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = await _create(client, caller)
    updates = [client.put(f"{BASE}/{cid}", json={"label": f"l{n}"}, headers=caller.headers) for n in range(10)]
    answers = await asyncio.gather(*updates[:5], client.delete(f"{BASE}/{cid}", headers=caller.headers), *updates[5:])
    deleted = answers[5]
    assert deleted.status_code == 200
    landed = sum(a.status_code == 200 for a in answers) - 1
    assert {a.status_code for a in answers} <= {200, 404}
    seen = _types(await outbox.of_workspace(caller.workspace), cid)
    assert seen[EventType.credential_updated.value] == landed
    assert seen[EventType.credential_deleted.value] == 1
