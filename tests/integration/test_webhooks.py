"""Events and webhooks in process: every event type reaches a subscriber once, signed (Standard Webhooks), with no
secret in it; signatures that do not verify; subscriptions, rotation, deliveries, retries; RFC 7009 revocation.

The app here runs its own dispatcher, expiry pass and purge on short intervals, and may call loopback URLs (the
receiver and the provider are small real HTTP servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from db import outbox
from devtools.stack import BaoServer
from service.events.types import SUBSCRIBABLE
from tests.support.api import API, Caller, MakeCaller, create
from tests.support.servers import running_app, settings_for, wait_for
from tests.support.webhooks import Provider, Receiver, basic, receiving

ADMIN = ("read", "write", "reveal", "admin")
HOOKS = "/api/v1/webhooks"


@pytest.fixture
async def app(client: httpx.AsyncClient, database_url: str, bao: BaoServer) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a dispatcher (polling every 0.1 s, retrying after ~0.2 s), expiry warnings 1 h ahead (checked
    every 0.3 s), and deletions purged after 2 s (``client`` first: app bindings nest)."""
    settings = settings_for(
        database_url,
        bao,
        CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true",
        CREDENTIALS_OAUTH_MAX_ATTEMPTS="1",
        CREDENTIALS_OAUTH_TIMEOUT="2",
        CREDENTIALS_WEBHOOKS_DISPATCH_INTERVAL="0.1",
        CREDENTIALS_WEBHOOKS_TIMEOUT="2",
        CREDENTIALS_WEBHOOKS_LEASE="3",
        CREDENTIALS_WEBHOOKS_RETRY_BASE="0.2",
        CREDENTIALS_WEBHOOKS_RETRY_MAX="0.5",
        CREDENTIALS_WEBHOOKS_RETRY_FOR="3",
        CREDENTIALS_WEBHOOKS_DISABLE_AFTER="5",
        CREDENTIALS_EXPIRY_LEAD_TIMES="1h",
        CREDENTIALS_EXPIRY_INTERVAL="0.3",
        CREDENTIALS_DELETE_RETENTION="2",
        CREDENTIALS_PURGE_INTERVAL="1",
        CREDENTIALS_DB_POOL_MAX="4",
    )
    async with running_app(settings) as events_client:
        yield events_client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


@pytest.fixture
def provider() -> Iterator[Provider]:
    found = Provider()
    found.start()
    try:
        yield found
    finally:
        found.stop()


async def subscribe(
    app: httpx.AsyncClient, who: Caller, receiver: Receiver, types: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": receiver.url}
    if types is not None:
        body["event_types"] = types
    response = await app.post(HOOKS, json=body, headers=who.headers)
    assert response.status_code == 201, response.text
    created = dict(response.json())
    receiver.secrets.append(created["secret"])
    return created


def oauth_secret(provider: Provider, token: str) -> dict[str, str]:
    return {
        "access_token": f"at_{token}",
        "refresh_token": f"rt_{token}",
        "token_url": provider.token_url,
        "revocation_url": provider.revocation_url,
        "client_id": "client-1",
        "client_secret": f"cs_{token}",
    }


async def test_every_event_type_is_delivered_once_with_a_valid_signature_and_no_secret(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver, provider: Provider
) -> None:
    who = await make_caller(permissions=ADMIN)
    hook = await subscribe(app, who, receiver, [str(t) for t in SUBSCRIBABLE])
    planted: list[str] = []  # every secret value sent to the service: none may appear in a delivery

    # api_key.created, api_key.revoked
    key = await app.post("/api/v1/api-keys", json={"label": "events"}, headers=who.headers)
    assert key.status_code == 200
    planted.append(key.json()["secret"])
    assert (await app.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=who.headers)).status_code == 200

    # created, updated, revealed, disabled, enabled, deleted, restored, revoked, (deleted again), purged
    first = await create(app, who, credentials={"api_key": "sk_live_first_secret_value"})
    planted.append("sk_live_first_secret_value")
    cid = first["id"]
    updated = await app.put(
        f"{API}/{cid}",
        json={"label": "renamed", "credentials": {"api_key": "sk_live_second_value"}},
        headers=who.headers,
    )
    assert updated.status_code == 200
    planted.append("sk_live_second_value")
    assert (await app.post(f"{API}/{cid}/reveal", headers=who.headers)).status_code == 200
    for action in ("disable", "enable"):
        assert (await app.post(f"{API}/{cid}/{action}", headers=who.headers)).status_code == 200
    assert (await app.delete(f"{API}/{cid}", headers=who.headers)).status_code == 200
    assert (await app.post(f"{API}/{cid}/restore", headers=who.headers)).status_code == 200
    assert (await app.post(f"{API}/{cid}/revoke", headers=who.headers)).status_code == 200
    assert (await app.delete(f"{API}/{cid}", headers=who.headers)).status_code == 200

    # expiring (within the 1 h lead time) and expired (2 s from now)
    soon = await create(app, who, expires_at=(datetime.now(UTC) + timedelta(minutes=30)).isoformat())
    brief = await create(app, who, expires_at=(datetime.now(UTC) + timedelta(seconds=2)).isoformat())

    # refresh_failed (the provider is down), then refresh_recovered
    oauth = await create(app, who, auth_type="oauth_token_refresh", credentials=oauth_secret(provider, "events1"))
    planted += ["at_events1", "rt_events1", "cs_events1"]
    provider.token_mode = "down"
    assert (await app.post(f"{API}/{oauth['id']}/refresh", headers=who.headers)).status_code == 502
    provider.token_mode = "ok"
    assert (await app.post(f"{API}/{oauth['id']}/refresh", headers=who.headers)).status_code == 200

    # webhook.test
    assert (await app.post(f"{HOOKS}/{hook['id']}/test", headers=who.headers)).status_code == 202

    wanted = {str(t) for t in SUBSCRIBABLE} - {"webhook.disabled"}  # its own test below
    await wait_for(_arrived(receiver, wanted), seconds=30)
    await asyncio.sleep(1.5)  # anything sent twice would arrive by now

    arrivals = receiver.snapshot()
    assert all(d.verified for d in arrivals)
    assert len({d.msg_id for d in arrivals}) == len(arrivals)  # no delivery twice
    by_type = {t: [json.loads(d.body) for d in arrivals if d.type == t] for t in wanted}
    # One delivery per change: four creates, two deletes, two credentials entering the lead time, one of each else.
    expected = dict.fromkeys(wanted, 1) | {"credential.created": 4, "credential.deleted": 2, "credential.expiring": 2}
    assert {t: len(found) for t, found in by_type.items()} == expected
    # Both expire within the 1 h lead time: one warning each; one of them has expired since.
    assert sorted(e["data"]["credential_id"] for e in by_type["credential.expiring"]) == sorted(
        [soon["id"], brief["id"]]
    )
    assert {e["data"]["lead_seconds"] for e in by_type["credential.expiring"]} == {3600}
    assert [e["data"]["credential_id"] for e in by_type["credential.expired"]] == [brief["id"]]
    for event in (json.loads(d.body) for d in arrivals):
        assert event["data"]["workspace_id"] == who.workspace
        assert event["data"]["actor"]
        assert event["data"]["request_id"]
        assert event["data"]["occurred_at"]
    assert by_type["credential.updated"][0]["data"]["changed_fields"] == ["credentials", "label"]
    assert by_type["credential.refresh_failed"][0]["data"]["error_class"] == "unavailable"
    assert by_type["credential.refresh_failed"][0]["data"]["attempt"] == 1
    assert by_type["credential.created"][0]["data"]["actor"] == who.key_id
    raw = b"".join(d.body + json.dumps(d.headers).encode() for d in arrivals)
    for value in planted:
        assert value.encode() not in raw


async def test_deletes_sharing_a_statement_are_each_delivered_once(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    """Concurrent deletes share a statement (``db.coalesce``): each still queues its own delivery."""
    who = await make_caller(permissions=ADMIN)
    await subscribe(app, who, receiver, ["credential.deleted"])
    ids = [(await create(app, who, label=f"batch {i}"))["id"] for i in range(6)]
    answers = await asyncio.gather(*(app.delete(f"{API}/{cid}", headers=who.headers) for cid in ids))
    assert [a.status_code for a in answers] == [200] * 6

    async def all_six() -> bool:
        return len(receiver.of_type("credential.deleted")) >= 6

    await wait_for(all_six, seconds=20)
    await asyncio.sleep(0.5)  # anything sent twice would arrive by now
    delivered = [json.loads(d.body)["data"] for d in receiver.of_type("credential.deleted")]
    assert sorted((d["credential_id"], d["label"]) for d in delivered) == sorted(
        (cid, f"batch {i}") for i, cid in enumerate(ids)
    )


def _arrived(receiver: Receiver, wanted: set[str]) -> Any:
    async def check() -> bool:
        return wanted <= {d.type for d in receiver.snapshot()}

    return check


async def test_a_tampered_or_replayed_delivery_fails_verification(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    hook = await subscribe(app, who, receiver)
    assert (await app.post(f"{HOOKS}/{hook['id']}/test", headers=who.headers)).status_code == 202
    await wait_for(_arrived(receiver, {"webhook.test"}), seconds=10)
    genuine = receiver.of_type("webhook.test")[0]
    verifier = Webhook(hook["secret"])
    verifier.verify(genuine.body, genuine.headers)  # the genuine one verifies

    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        verifier.verify(genuine.body.replace(b"webhook.test", b"webhook.tesT"), genuine.headers)
    replayed = {**genuine.headers, "webhook-timestamp": str(int(time.time()) - 600)}
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(genuine.body, replayed)
    refreshed = {**genuine.headers, "webhook-timestamp": str(int(time.time()) + 1)}
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        verifier.verify(genuine.body, refreshed)  # the timestamp is signed: a replay cannot refresh it
    assert not Receiver.verifies(receiver, genuine.body, {**genuine.headers, "webhook-signature": "v1,AAAA"})


async def test_a_rotated_secret_and_the_previous_one_both_verify_during_the_grace_period(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    hook = await subscribe(app, who, receiver)
    rotated = await app.post(f"{HOOKS}/{hook['id']}/rotate-secret", headers=who.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != hook["secret"]
    assert (await app.post(f"{HOOKS}/{hook['id']}/test", headers=who.headers)).status_code == 202
    await wait_for(_arrived(receiver, {"webhook.test"}), seconds=10)
    delivery = receiver.of_type("webhook.test")[0]
    Webhook(hook["secret"]).verify(delivery.body, delivery.headers)
    Webhook(rotated.json()["secret"]).verify(delivery.body, delivery.headers)


async def test_the_signing_secret_is_shown_once_and_kept_only_as_a_transit_ciphertext(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    hook = await subscribe(app, who, receiver)
    assert hook["secret"].startswith("whsec_")
    listed = await app.get(HOOKS, headers=who.headers)
    assert listed.status_code == 200
    assert "secret" not in json.dumps(listed.json()["webhooks"][0]).replace("previous_secret_valid_until", "")
    from db.tables import Credential

    rows = await Credential.raw("SELECT secret_ciphertext::text AS c FROM webhook WHERE id = {}", hook["id"])
    assert rows[0]["c"].startswith("vault:v")
    assert hook["secret"] not in rows[0]["c"]


async def test_webhook_urls_obey_the_egress_rules(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    who = await make_caller(permissions=ADMIN)
    for url in ("http://169.254.169.254/latest", "http://127.0.0.1:9/hook", "ftp://hooks.example.com/x"):
        response = await client.post(HOOKS, json={"url": url}, headers=who.headers)
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"] == ["body", "url"]


async def test_webhooks_need_admin_and_other_workspaces_webhooks_are_404(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    hook = await subscribe(app, who, receiver)
    writer = await make_caller(who.workspace, permissions=("read", "write"))
    assert (await app.get(HOOKS, headers=writer.headers)).status_code == 403
    other = await make_caller(permissions=ADMIN)
    response = await app.get(f"{HOOKS}/{hook['id']}", headers=other.headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "Webhook not found"}
    assert (await app.delete(f"{HOOKS}/{hook['id']}", headers=other.headers)).status_code == 404
    assert (await app.delete(f"{HOOKS}/{hook['id']}", headers=who.headers)).status_code == 204


async def test_revealed_is_sent_only_to_subscriptions_that_opt_in(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    hook = await subscribe(app, who, receiver)  # the default types
    assert "credential.revealed" not in hook["event_types"]
    made = await create(app, who)
    assert (await app.post(f"{API}/{made['id']}/reveal", headers=who.headers)).status_code == 200
    await wait_for(_arrived(receiver, {"credential.created"}), seconds=10)
    await asyncio.sleep(0.5)
    assert [d.type for d in receiver.snapshot()] == ["credential.created"]


async def test_failed_deliveries_are_listed_retried_and_given_up_and_a_failing_endpoint_is_disabled(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver
) -> None:
    who = await make_caller(permissions=ADMIN)
    watcher = await subscribe(app, who, receiver, ["webhook.disabled"])
    with receiving() as failing:
        failing.mode = "fail"
        hook = await subscribe(app, who, failing, ["credential.created"])
        await create(app, who)

        async def given_up() -> bool:
            listed = await app.get(f"{HOOKS}/{hook['id']}/deliveries", headers=who.headers)
            return listed.json()["deliveries"][0]["status"] == "failed"

        await wait_for(given_up, seconds=20)  # CREDENTIALS_WEBHOOKS_RETRY_FOR=3
        delivery = (await app.get(f"{HOOKS}/{hook['id']}/deliveries", headers=who.headers)).json()["deliveries"][0]
        assert delivery["attempts"] >= 3
        assert delivery["last_status_code"] == 500
        assert delivery["event_type"] == "credential.created"
        attempts = failing.ids()
        assert set(attempts) == {delivery["id"]}  # the same webhook-id at every attempt
        assert len(attempts) == delivery["attempts"]
        # Still failing CREDENTIALS_WEBHOOKS_DISABLE_AFTER=5 s after its first failure: disabled, with an event. The
        # next delivery is made once those 5 s are over (its retries last 3 s: made earlier, on a fast machine, it
        # could be given up before the endpoint had been failing for 5 s, and nothing would disable it).
        read = (await app.get(f"{HOOKS}/{hook['id']}", headers=who.headers)).json()
        failing_since = datetime.fromisoformat(read["failing_since"].replace("Z", "+00:00"))
        await asyncio.sleep(max(0.0, (failing_since + timedelta(seconds=5.2) - datetime.now(UTC)).total_seconds()))
        await create(app, who)
        await wait_for(_arrived(receiver, {"webhook.disabled"}), seconds=45)
        disabled = json.loads(receiver.of_type("webhook.disabled")[0].body)["data"]
        assert disabled["webhook_id"] == hook["id"]
        assert (await app.get(f"{HOOKS}/{hook['id']}", headers=who.headers)).json()["status"] == "disabled"
        assert watcher["status"] == "active"

    # A retry by hand of a failed delivery, to an endpoint that now answers.
    with receiving() as healthy:
        healthy.secrets.append(hook["secret"])
        again = await app.post(
            f"{HOOKS}", json={"url": healthy.url, "event_types": ["credential.created"]}, headers=who.headers
        )
        healthy.secrets.append(again.json()["secret"])
        await create(app, who)
        await wait_for(_arrived(healthy, {"credential.created"}), seconds=10)
        listed = (await app.get(f"{HOOKS}/{again.json()['id']}/deliveries", headers=who.headers)).json()["deliveries"]
        retried = await app.post(
            f"{HOOKS}/{again.json()['id']}/deliveries/{listed[0]['id']}/retry", headers=who.headers
        )
        assert retried.status_code == 202
        await wait_for(_count(healthy, 2), seconds=10)
        assert healthy.ids() == [listed[0]["id"], listed[0]["id"]]  # the same webhook-id when retried


def _count(receiver: Receiver, n: int) -> Any:
    async def check() -> bool:
        return len(receiver.snapshot()) >= n

    return check


async def test_revocation_calls_the_provider_with_client_authentication_refresh_token_first(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver, provider: Provider
) -> None:
    who = await make_caller(permissions=ADMIN)
    await subscribe(app, who, receiver, ["credential.revoked", "credential.purged"])
    made = await create(app, who, auth_type="oauth_token_refresh", credentials=oauth_secret(provider, "rev1"))
    response = await app.post(f"{API}/{made['id']}/revoke", json={"reason": "offboarding"}, headers=who.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert response.json()["status_reason"] == "offboarding; provider revocation revoked"
    assert provider.revocations == [
        {
            "form": {"token": "rt_rev1", "token_type_hint": "refresh_token"},
            "authorization": basic("client-1", "cs_rev1"),
        },
        {
            "form": {"token": "at_rev1", "token_type_hint": "access_token"},
            "authorization": basic("client-1", "cs_rev1"),
        },
    ]
    await wait_for(_arrived(receiver, {"credential.revoked"}), seconds=10)
    event = json.loads(receiver.of_type("credential.revoked")[0].body)["data"]
    assert event["revocation"] == {"outcome": "revoked"}

    # On purge too (deleted, then purged 2 s later by the app's own purge).
    other = await create(app, who, auth_type="oauth_token_refresh", credentials=oauth_secret(provider, "rev2"))
    assert (await app.delete(f"{API}/{other['id']}", headers=who.headers)).status_code == 200
    await wait_for(_arrived(receiver, {"credential.purged"}), seconds=15)
    assert [r["form"]["token"] for r in provider.revocations[2:]] == ["rt_rev2", "at_rev2"]
    purged = json.loads(receiver.of_type("credential.purged")[0].body)["data"]
    assert purged["credential_id"] == other["id"]
    assert purged["revocation"] == {"outcome": "revoked"}


async def test_a_failing_provider_leaves_the_credential_revoked_locally_and_reports_it(
    app: httpx.AsyncClient, make_caller: MakeCaller, receiver: Receiver, provider: Provider
) -> None:
    who = await make_caller(permissions=ADMIN)
    await subscribe(app, who, receiver, ["credential.revoked"])
    provider.revoke_status = 503
    made = await create(app, who, auth_type="oauth_token_refresh", credentials=oauth_secret(provider, "rev3"))
    response = await app.post(f"{API}/{made['id']}/revoke", headers=who.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "revoked"
    assert body["status_reason"] == ("provider revocation failed (refresh_token: HTTP 503; access_token: HTTP 503)")
    await wait_for(_arrived(receiver, {"credential.revoked"}), seconds=10)
    event = json.loads(receiver.of_type("credential.revoked")[0].body)["data"]
    assert event["revocation"] == {
        "outcome": "failed",
        "detail": "refresh_token: HTTP 503; access_token: HTTP 503",
    }
    # An unreachable provider (nothing listening) fails the same way, without blocking.
    provider.stop()
    gone = await create(app, who, auth_type="oauth_token_refresh", credentials=oauth_secret(provider, "rev4"))
    response = await app.post(f"{API}/{gone['id']}/revoke", headers=who.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert response.json()["status_reason"].startswith("provider revocation failed (refresh_token: cannot connect")


async def test_a_revocation_url_obeys_the_egress_rules(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    who = await make_caller()
    body = {
        "access_token": "at_x",
        "refresh_token": "rt_x",
        "token_url": "https://auth.example.com/token",
        "client_id": "c",
        "revocation_url": "http://169.254.169.254/revoke",
    }
    response = await client.post(
        API,
        json={"label": "x", "auth_type": "oauth_token_refresh", "credential_scope": "workspace", "credentials": body},
        headers=who.headers,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "credentials", "revocation_url"]


async def test_events_are_written_with_the_change_and_not_without_it(
    app: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    """A refused change (a PUT with a stale If-Match) writes no event; an accepted one writes exactly one."""
    who = await make_caller(permissions=ADMIN)
    made = await create(app, who)
    refused = await app.put(f"{API}/{made['id']}", json={"label": "x"}, headers={**who.headers, "If-Match": '"stale"'})
    assert refused.status_code == 412
    assert (await app.put(f"{API}/{made['id']}", json={"label": "y"}, headers=who.headers)).status_code == 200
    types = [row["type"] for row in await outbox.of_workspace(who.workspace)]
    assert types == ["api_key.created", "credential.created", "credential.updated"]
