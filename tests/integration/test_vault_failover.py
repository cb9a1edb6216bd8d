"""Failover between Vault nodes (vault/nodes.py) against the real OpenBao, with dead and dropping nodes before it,
through both transports (hvac's session and the aiohttp fast path).

A "dropping node" is a TCP listener that claims to be the active node on ``sys/health`` (so the client sends to it
first) and closes the connection on every other request without an answer: what a Vault node killed mid-request
looks like to the client. A "landing node" passes the request on to the real node first, so the work is done and only
the answer is lost. They stand for the network fault, not for Vault.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import hvac
import msgspec
import pytest

from db import credentials as rows
from db.credentials import State
from devtools.stack import BaoServer, free_port
from service.auth.principal import Permission, Principal
from service.config import Settings
from service.context import RequestContext
from service.credentials.schemas import CredentialCreate
from service.credentials.service import CredentialService, Lifecycle
from service.errors import NotFound
from service.maintenance.purge import purge
from tests.support.api import new_credential
from vault.client import audit_headers, make_client
from vault.errors import VaultOutcomeUnknown, VaultUnavailable, VersionConflict, translated
from vault.nodes import NodeRing, RetryPolicy
from vault.secret import Secret
from vault.store import CallContext, SecretStore, derivation_context
from vault.transport import VaultTransport, headers_of

HEALTHY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


@pytest.fixture
def dropping_node() -> Iterator[tuple[str, list[int]]]:
    """A listener that takes each request and hangs up; also counts the requests it swallowed."""
    server = socket.create_server(("127.0.0.1", 0))
    swallowed: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if request.startswith(b"GET /v1/sys/health"):
                    conn.sendall(HEALTHY)
                elif request:
                    swallowed.append(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", swallowed
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (close alone does not, on Linux)
    server.close()
    thread.join(5)


def ctx() -> CallContext:
    return CallContext(request_id=f"req-failover-{secrets.token_hex(4)}", actor="tester", workspace="wsp_failover")


async def test_a_dead_first_node_is_skipped_and_the_audited_headers_reach_the_live_one(
    settings: Settings, bao: BaoServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = SecretStore.connect([dead, bao.addr], bao.token, workers=2, timeout=5, failover_seconds=3)
    call = ctx()
    try:
        await store.start(call)
        stored = await store.create(call, "cred-1", Secret(b"s3cret-value"))
        assert (await store.read(call, "cred-1", stored.version)).reveal() == b"s3cret-value"
        await store.destroy(call, "cred-1")
    finally:
        await store.aclose()

    entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
    mine = [e for e in entries if e["request"].get("headers", {}).get("x-request-id") == [call.request_id]]
    assert {e["request"]["path"] for e in mine} >= {
        "transit/encrypt/credentials",
        "credentials/data/workspaces/wsp_failover/credentials/cred-1",
        "transit/decrypt/credentials",
    }
    assert all(e["request"]["headers"]["x-credentials-actor"] == ["tester"] for e in mine)


async def test_a_call_lost_in_flight_is_repeated_only_when_repeating_it_is_safe(
    settings: Settings, bao: BaoServer, dropping_node: tuple[str, list[int]]
) -> None:
    dropping, swallowed = dropping_node
    store = SecretStore.connect([dropping, bao.addr], bao.token, workers=2, timeout=5, failover_seconds=3)
    call = ctx()
    try:
        # A create-only KV write (cas=0) and transit calls may be sent again: they land once on the live node.
        stored = await store.create(call, "cred-2", Secret(b"v1"))
        assert (await store.read(call, "cred-2", stored.version)).reveal() == b"v1"
        assert swallowed  # the dropping node did take (and lose) requests first
        # A KV write without check-and-set could be stored twice: it is not repeated, the caller sees the failure.
        # A fresh client: its first look at sys/health makes the dropping node the one it asks first.
        client = make_client([dropping, bao.addr], bao.token, pool_size=1, timeout=5, failover_seconds=3)
        before = len(swallowed)
        with pytest.raises(VaultUnavailable), audit_headers(call.headers()):
            translated(client.secrets.kv.v2.create_or_update_secret)(
                path="workspaces/wsp_failover/credentials/no-cas", secret={"x": "y"}, mount_point="credentials"
            )
        assert len(swallowed) == before + 1
        with pytest.raises(hvac.exceptions.InvalidPath):
            hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.read_secret_version(
                path="workspaces/wsp_failover/credentials/no-cas",
                mount_point="credentials",
                raise_on_deleted_version=True,
            )
        await store.destroy(call, "cred-2")
    finally:
        await store.aclose()


def read_request(conn: socket.socket) -> bytes:
    """One HTTP/1.1 request off ``conn``: its head and a body of ``Content-Length`` bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def landing_node(bao: BaoServer) -> Iterator[tuple[str, list[bytes]]]:
    """A listener that passes each request on to the real node, then hangs up without the answer: the request was
    carried out, its answer was lost (a node that died between doing the work and replying). Records what it passed."""
    server = socket.create_server(("127.0.0.1", 0))
    passed: list[bytes] = []
    upstream = bao.addr.removeprefix("http://").split(":")

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = read_request(conn)
                if request.startswith(b"GET /v1/sys/health"):
                    conn.sendall(HEALTHY)
                elif request:
                    passed.append(request)
                    with socket.create_connection((upstream[0], int(upstream[1]))) as real:
                        real.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                        while real.recv(65536):
                            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", passed
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (close alone does not, on Linux)
    server.close()
    thread.join(5)


def audited(bao: BaoServer, request_id: str, path: str) -> list[dict[str, object]]:
    """The audit log's request entries of ``path`` that carry ``request_id``."""
    entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
    return [
        e
        for e in entries
        if e["type"] == "request"
        and e["request"]["path"] == path
        and request_id in e["request"].get("headers", {}).get("x-request-id", [])
    ]


async def test_the_fast_path_sends_a_transit_batch_lost_in_flight_once_more_with_its_audited_headers(
    bao: BaoServer, landing_node: tuple[str, list[bytes]]
) -> None:
    node, passed = landing_node
    transport = VaultTransport(NodeRing([node, bao.addr]), lambda: bao.token, pool_size=2, timeout=5, wait_seconds=3)
    request_ids = (f"req-a-{secrets.token_hex(3)}", f"req-b-{secrets.token_hex(3)}")
    items = [
        {"plaintext": base64.b64encode(b"one").decode(), "context": derivation_context("wsp_failover", "c1")},
        {"plaintext": base64.b64encode(b"two").decode(), "context": derivation_context("wsp_failover", "c2")},
    ]
    try:
        response = await transport.call(
            "POST",
            "transit/encrypt/credentials",
            headers_of([(rid, "tester", "wsp_failover") for rid in request_ids]),
            {"batch_input": items},
        )
    finally:
        await transport.close()

    results = response["data"]["batch_results"]
    assert [r["ciphertext"].startswith("vault:v") for r in results] == [True, True]
    assert len(passed) == 1  # the first attempt was carried out, its answer lost; the repeat went to the live node
    for rid in request_ids:  # both attempts carried every request's headers
        entries = audited(bao, rid, "transit/encrypt/credentials")
        assert len(entries) == 2
        assert all(e["request"]["headers"]["x-credentials-actor"] == ["tester", "tester"] for e in entries)


async def test_the_fast_path_reports_a_lost_check_and_set_write_that_landed_as_done(
    bao: BaoServer, landing_node: tuple[str, list[bytes]]
) -> None:
    node, passed = landing_node
    transport = VaultTransport(
        NodeRing([node, bao.addr]),
        lambda: bao.token,
        pool_size=2,
        timeout=5,
        policy=RetryPolicy(kv_mount="credentials", transit_mount="transit"),
        wait_seconds=3,
    )
    path = f"workspaces/wsp_failover/credentials/landed-{secrets.token_hex(4)}"
    body = {"options": {"cas": 0}, "data": {"ciphertext": f"vault:v1:{secrets.token_hex(8)}"}}
    try:
        written = await transport.call("POST", f"credentials/data/{path}", headers_of([("req-w", "t", "w")]), body)
        # The same create-only write again is a real conflict: the read-back shows data of its own, not this one's.
        other = {"options": {"cas": 0}, "data": {"ciphertext": "vault:v1:other"}}
        with pytest.raises(VersionConflict):
            await transport.call("POST", f"credentials/data/{path}", headers_of([("req-w2", "t", "w")]), other)
        stored = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.read_secret_version(
            path=path, mount_point="credentials", raise_on_deleted_version=True
        )
    finally:
        await transport.close()
        hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.delete_metadata_and_all_versions(
            path, mount_point="credentials"
        )

    assert written["data"]["version"] == 1
    assert len(passed) == 1  # the first write went through the node that lost its answer
    assert stored["data"]["data"] == body["data"]
    assert stored["data"]["metadata"]["version"] == 1  # stored once


async def test_the_fast_path_sends_a_lost_call_again_only_once(
    bao: BaoServer, dropping_node: tuple[str, list[int]]
) -> None:
    dropping, swallowed = dropping_node
    other = socket.create_server(("127.0.0.1", 0))  # accepts and never answers: the repeat times out, lost too
    silent = f"http://127.0.0.1:{other.getsockname()[1]}"
    transport = VaultTransport(
        NodeRing([dropping, silent, bao.addr]), lambda: bao.token, pool_size=2, timeout=1, wait_seconds=3
    )
    item = {"plaintext": base64.b64encode(b"x").decode(), "context": derivation_context("wsp_failover", "c1")}
    request_id = f"req-twice-{secrets.token_hex(3)}"
    try:
        with pytest.raises(VaultUnavailable):
            await transport.call(
                "POST",
                "transit/encrypt/credentials",
                headers_of([(request_id, "tester", "wsp_failover")]),
                {"batch_input": [item]},
            )
    finally:
        await transport.close()
        other.close()

    assert swallowed == [1]
    assert audited(bao, request_id, "transit/encrypt/credentials") == []  # the third node was never asked


async def test_a_destroy_whose_answer_is_lost_is_reported_as_possibly_done_and_an_unreachable_one_as_not(
    bao: BaoServer, landing_node: tuple[str, list[bytes]]
) -> None:
    node, passed = landing_node
    call = ctx()
    cid = f"c-{secrets.token_hex(4)}"
    direct = SecretStore.connect(bao.addr, bao.token, workers=2, timeout=5)
    lossy = SecretStore.connect(node, bao.token, workers=2, timeout=5)
    closed = SecretStore.connect(f"http://127.0.0.1:{free_port()}", bao.token, workers=2, timeout=5)
    try:
        await direct.create(call, cid, Secret(b'{"api_key": "doomed"}'))
        with pytest.raises(VaultOutcomeUnknown):
            await lossy.destroy(call, cid)
        assert passed  # it reached Vault...
        assert await direct.current_version(call, cid) is None  # ...which carried it out
        with pytest.raises(VaultUnavailable) as refused:
            await closed.destroy(call, cid)
        assert not isinstance(refused.value, VaultOutcomeUnknown)  # nothing was sent: it did not happen
    finally:
        for store in (direct, lossy, closed):
            await store.aclose()


async def test_an_immediate_delete_whose_destroy_may_have_landed_stays_hidden_and_the_purge_finishes_it(
    client: httpx.AsyncClient, bao: BaoServer, landing_node: tuple[str, list[bytes]]
) -> None:
    """Putting the row back as active, as after a refused destroy, would leave a visible credential whose secret is
    gone (every reveal a 500): seen under load when Vault was killed during deletes (test_faults_under_load)."""
    node, _ = landing_node
    principal = Principal(workspace_id="wsp_failover", actor_id="tester", permissions=frozenset(Permission))
    request = RequestContext(f"req-{secrets.token_hex(4)}", principal)
    direct = SecretStore.connect(bao.addr, bao.token, workers=2, timeout=5)
    lossy = SecretStore.connect(node, bao.token, workers=2, timeout=5)
    immediately = Lifecycle(delete_retention=timedelta(0))
    try:
        body = msgspec.convert(new_credential(credentials={"api_key": "doomed"}), CredentialCreate)
        created = await CredentialService(direct, immediately).create(request, body)
        with pytest.raises(VaultOutcomeUnknown):
            await CredentialService(lossy, immediately).delete(request, str(created.id))
        row = await rows.any_state(created.id)
        assert row is not None
        assert row["state"] == State.deleted  # hidden, not put back as active
        with pytest.raises(NotFound):
            await CredentialService(direct, immediately).get(request, str(created.id))
        assert await purge(CredentialService(direct, immediately)) >= 1
        assert await rows.any_state(created.id) is None
    finally:
        for store in (direct, lossy):
            await store.aclose()
