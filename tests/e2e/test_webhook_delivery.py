"""Delivery guarantees with real ``credctl serve`` processes: at least once across a kill -9, a backlog after the
receiver was down, no duplicates between two instances, and expiry warnings once across instances and restarts.

Each test prints its figures (events sent, received, duplicates, time to drain): run with ``-s`` to see them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from db import outbox
from db import webhooks as delivery_rows
from service.config import Settings
from tests.support.api import API, MakeCaller, new_credential
from tests.support.servers import env_for, wait_for
from tests.support.webhooks import Instance, Receiver, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.fault]
ADMIN = ("read", "write", "reveal", "admin")
RECEIVER_DOWN_SECONDS = 30


def instance_env(settings: Settings, **extra: str) -> dict[str, str]:
    values = {
        "CREDENTIALS_OAUTH_ALLOW_LOOPBACK": "true",
        "CREDENTIALS_WEBHOOKS_DISPATCH_INTERVAL": "0.2",
        "CREDENTIALS_WEBHOOKS_CONCURRENCY": "8",
        "CREDENTIALS_WEBHOOKS_TIMEOUT": "3",
        "CREDENTIALS_WEBHOOKS_LEASE": "5",
        "CREDENTIALS_WEBHOOKS_RETRY_BASE": "0.5",
        "CREDENTIALS_WEBHOOKS_RETRY_MAX": "2",
        "CREDENTIALS_EXPIRY_INTERVAL": "0",
        "CREDENTIALS_PURGE_INTERVAL": "0",
        "CREDENTIALS_VAULT_WORKERS": "4",
        "CREDENTIALS_DB_POOL_MAX": "4",
    }
    return env_for(settings, **{**values, **extra})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


def subscribe(url: str, key: str, receiver: Receiver, types: list[str]) -> str:
    response = httpx.post(
        f"{url}/api/v1/webhooks",
        json={"url": receiver.url, "event_types": types},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    receiver.secrets.append(response.json()["secret"])
    return str(response.json()["id"])


def create_many(url: str, key: str, n: int) -> list[str]:
    made = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for _ in range(n):
            response = http.post(API, json=new_credential())
            assert response.status_code == 200, response.text
            made.append(response.json()["id"])
    return made


def figures(name: str, sent: int, receiver: Receiver, event_type: str, drained_in: float | None) -> Counter[str]:
    ids = Counter(receiver.ids(event_type))
    duplicates = sum(n - 1 for n in ids.values())
    drain = "-" if drained_in is None else f"{drained_in:.1f} s"
    print(
        f"\n[{name}] events sent: {sent}, received: {len(ids)} distinct / {sum(ids.values())} deliveries, "
        f"duplicates: {duplicates}, time to drain: {drain}"
    )
    return ids


async def all_received(receiver: Receiver, event_type: str, n: int, seconds: float) -> float:
    started = time.monotonic()

    async def done() -> bool:
        return len(set(receiver.ids(event_type))) >= n

    await wait_for(done, seconds=seconds)
    return time.monotonic() - started


async def test_an_event_committed_before_a_kill_9_is_delivered_after_the_restart_with_the_same_webhook_id(
    settings: Settings, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    first = Instance(instance_env(settings)).start()
    try:
        subscribe(first.url, who.key, receiver, ["credential.created"])
        receiver.mode = "hang"  # the receiver takes the requests and never answers: in flight at the kill
        sent = 20
        made = await asyncio.to_thread(create_many, first.url, who.key, sent)
        await wait_for(_has(receiver, 1), seconds=20)
        in_flight_at_kill = set(receiver.ids("credential.created"))
    finally:
        first.kill()
    receiver.release()
    restarted_at = time.monotonic()
    second = Instance(instance_env(settings)).start()
    try:
        await all_received(receiver, "credential.created", sent, seconds=60)

        # The deliveries in flight at the kill reached the receiver, but only the restarted instance can record
        # them: it sends them again once their lease ends, with the same webhook-id.
        async def all_recorded() -> bool:
            return await delivery_rows.counts(who.workspace) == {"delivered": sent}

        await wait_for(all_recorded, seconds=60)
        drained_in = time.monotonic() - restarted_at
    finally:
        second.stop()
    ids = figures("kill -9", sent, receiver, "credential.created", drained_in)
    events = await outbox.of_workspace(who.workspace)
    assert sorted(str(e["credential_id"]) for e in events if e["type"] == "credential.created") == sorted(made)
    assert len(ids) == sent  # every event delivered: none lost
    assert all(d.verified for d in receiver.snapshot())
    duplicated = {msg for msg, n in ids.items() if n > 1}
    assert duplicated <= in_flight_at_kill  # only what was in flight at the crash came twice, with the same id
    assert await delivery_rows.counts(who.workspace) == {"delivered": sent}


def _has(receiver: Receiver, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return len(receiver.snapshot()) >= n

    return check


async def test_the_backlog_arrives_when_the_receiver_returns(
    settings: Settings, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    instance = Instance(instance_env(settings)).start()
    try:
        subscribe(instance.url, who.key, receiver, ["credential.created"])
        receiver.stop()
        down_at = time.monotonic()
        sent = 50
        await asyncio.to_thread(create_many, instance.url, who.key, sent)
        await asyncio.sleep(max(0.0, RECEIVER_DOWN_SECONDS - (time.monotonic() - down_at)))
        assert receiver.snapshot() == []
        receiver.start()
        drained_in = await all_received(receiver, "credential.created", sent, seconds=60)
        await asyncio.sleep(1.0)
    finally:
        instance.stop()
    ids = figures(f"receiver down {RECEIVER_DOWN_SECONDS} s", sent, receiver, "credential.created", drained_in)
    assert len(ids) == sent
    assert sum(ids.values()) == sent  # no duplicates: no instance crashed
    assert all(d.verified for d in receiver.snapshot())


async def test_two_instances_deliver_every_event_once(
    settings: Settings, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    one = Instance(instance_env(settings)).start()
    two = Instance(instance_env(settings)).start()
    try:
        subscribe(one.url, who.key, receiver, ["credential.created"])
        sent = 100
        started = time.monotonic()
        await asyncio.gather(
            asyncio.to_thread(create_many, one.url, who.key, sent // 2),
            asyncio.to_thread(create_many, two.url, who.key, sent // 2),
        )
        await all_received(receiver, "credential.created", sent, seconds=60)
        drained_in = time.monotonic() - started
        await asyncio.sleep(1.5)
    finally:
        one.stop()
        two.stop()
    ids = figures("two instances", sent, receiver, "credential.created", drained_in)
    assert len(ids) == sent
    assert sum(ids.values()) == sent


async def test_expiry_warnings_fire_once_per_lead_time_across_two_instances_and_restarts(
    settings: Settings, make_caller: MakeCaller, client: httpx.AsyncClient
) -> None:
    who = await make_caller(permissions=ADMIN)
    expiring = instance_env(settings, CREDENTIALS_EXPIRY_LEAD_TIMES="1h,3s", CREDENTIALS_EXPIRY_INTERVAL="0.2")
    one = Instance(expiring).start()
    two = Instance(expiring).start()
    try:
        # Made once both instances run, so that both see each warning come due.
        far = datetime.now(UTC) + timedelta(minutes=30)
        near = datetime.now(UTC) + timedelta(seconds=8)
        ids = {}
        for name, when in (("far", far), ("near", near)):
            response = await client.post(API, json=new_credential(expires_at=when.isoformat()), headers=who.headers)
            assert response.status_code == 200
            ids[response.json()["id"]] = name
        await asyncio.sleep(2)
        one.kill()  # a crash, then a restart, while warnings are due
        one = Instance(expiring).start()
        await asyncio.sleep(max(0.0, (near - datetime.now(UTC)).total_seconds()) + 2)
        two.stop()
        two = Instance(expiring).start()
        await asyncio.sleep(2)
    finally:
        one.stop()
        two.stop()
    seen = Counter(
        (ids[str(e["credential_id"])], e["type"], e["payload"] and _lead(e["payload"]))
        for e in await outbox.of_workspace(who.workspace)
        if e["type"] in {"credential.expiring", "credential.expired"}
    )
    print(f"\n[expiry] warnings: {dict(seen)}")
    assert seen == Counter(
        {
            ("far", "credential.expiring", 3600): 1,
            ("near", "credential.expiring", 3600): 1,
            ("near", "credential.expiring", 3): 1,
            ("near", "credential.expired", None): 1,
        }
    )


def _lead(payload: object) -> int | None:
    import json

    data = json.loads(payload) if isinstance(payload, str) else payload
    assert isinstance(data, dict)
    lead = data["data"].get("lead_seconds")
    return None if lead is None else int(lead)
