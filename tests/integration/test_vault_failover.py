"""Failover between Vault nodes (vault/nodes.py) against the real OpenBao, with dead and dropping nodes before it.

A "dropping node" is a TCP listener that claims to be the active node on ``sys/health`` (so the client sends to it
first) and closes the connection on every other request without an answer: what a Vault node killed mid-request
looks like to the client. It stands for the network fault, not for Vault.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator

import hvac
import pytest

from devtools.stack import BaoServer, free_port
from service.config import Settings
from vault.client import audit_headers, make_client
from vault.errors import VaultUnavailable, translated
from vault.secret import Secret
from vault.store import CallContext, SecretStore

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
