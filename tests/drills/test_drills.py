"""Failure drills on a three-node OpenBao raft cluster, a replicated Postgres and two service instances.

Run them alone with ``pytest -m drill -s tests/drills`` (``-s`` prints each drill's table; the tables are also
written to ``drills.json`` in pytest's base temp dir). Each drill runs a mixed load at concurrency 16 across both
instances for ``DRILL_SECONDS``, injects one fault ``FAULT_AT`` seconds in, then audits: every create acknowledged
with 200 reveals the value sent (or the last one acknowledged), and ``credctl reconcile`` finds nothing to repair
after ``--apply``. The drills share one cluster and run in file order; each one heals what it broke, except the
last (the Postgres failover), which leaves the promoted standby as the primary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from bench.vault_limits import measure
from tests.drills.cluster import BaoCluster, PgPair, ServiceInstance, start_bao_cluster, start_pg_pair
from tests.drills.load import API, MixedLoad, Report
from tests.support.api import new_credential
from tests.support.oauth import TokenEndpoint, oauth_secret
from tests.support.servers import CREDCTL, TEST_ENVIRONMENT
from vault.secret import Secret
from vault.store import CallContext, SecretStore, secret_path

pytestmark = [pytest.mark.drill, pytest.mark.fault]

DRILL_SECONDS = 14.0
FAULT_AT = 3.0
LEADER_KILL_WINDOW = 5.0
"""Target: the error window after the raft leader dies stays under this (election plus one retry)."""


@dataclass
class HA:
    bao: BaoCluster
    pg: PgPair
    instances: list[ServiceInstance]
    env: dict[str, str]
    load: MixedLoad
    reports: list[Report]
    limits: dict[str, float]


def credctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CREDCTL, *args], env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HA]:
    state = tmp_path_factory.mktemp("ha")
    bao = start_bao_cluster(state)
    pg: PgPair | None = None
    instances: list[ServiceInstance] = []
    reports: list[Report] = []
    limits: dict[str, float] = {}
    try:
        pg = start_pg_pair()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CREDENTIALS_", "DATABASE_"))},
            **TEST_ENVIRONMENT,
            "DATABASE_URL": pg.url("postgres"),
            "VAULT_ADDR": bao.addrs[0],
            "CREDENTIALS_VAULT_ADDRS": ",".join(bao.addrs[1:]),
            "VAULT_TOKEN": bao.root_token,
            "CREDENTIALS_RETRY_AFTER": "1",
            "CREDENTIALS_VAULT_WORKERS": "16",
            "CREDENTIALS_DB_POOL_MAX": "16",
            "CREDENTIALS_OAUTH_ALLOW_LOOPBACK": "true",  # the single-flight check's token endpoint is on loopback
        }
        for step in (("vault-bootstrap",), ("migrate",)):
            done = credctl(*step, env=env)
            assert done.returncode == 0, done.stderr
        key = credctl("api-key", "create", "--workspace", f"wsp_drill_{secrets.token_hex(3)}", env=env)
        assert key.returncode == 0, key.stderr
        instances = [ServiceInstance(env, state / f"serve{i}.log") for i in (1, 2)]
        for instance in instances:
            instance.start()
        yield HA(bao, pg, instances, env, MixedLoad([i.url for i in instances], key.stdout.strip()), reports, limits)
    finally:
        for instance in instances:
            instance.stop()
        if pg is not None:
            pg.stop()
        bao.stop()
        summary = {
            r.name: {"failed": dict(r.failed), "window": round(r.error_window, 2), **_counts(r)} for r in reports
        }
        summary["vault_limits"] = limits
        (tmp_path_factory.getbasetemp() / "drills.json").write_text(json.dumps(summary, indent=2))


def _counts(report: Report) -> dict[str, int]:
    return {
        "requests": report.requests,
        "lost": report.audit_lost,
        "wrong_reveals": report.wrong_reveals,
        "slowest_after_fault_s": round(report.slowest_after_fault, 2),
        "service_cpu_ms_per_request": round(report.cpu_ms_per_request or 0, 2),
    }


def cpu_seconds(instances: list[ServiceInstance]) -> float | None:
    """User + system CPU of the service processes (Linux /proc); None when one is gone or /proc is missing."""
    total = 0
    for instance in instances:
        try:
            assert instance.process is not None
            fields = Path(f"/proc/{instance.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AssertionError):
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


async def drill(ha: HA, name: str, fault: Callable[[], None]) -> Report:
    before = cpu_seconds(ha.instances)
    report = await ha.load.run(name, DRILL_SECONDS, FAULT_AT, fault)
    after = cpu_seconds(ha.instances)
    if before is not None and after is not None and report.requests:
        report.cpu_ms_per_request = 1000 * (after - before) / report.requests
    await ha.load.audit(report)
    applied = credctl("reconcile", "--apply", "--older-than", "0", env=ha.env)
    assert applied.returncode == 0, applied.stderr
    again = credctl("reconcile", "--older-than", "0", env=ha.env)
    report.reconcile = again.stdout.strip().splitlines()[-1] if again.stdout.strip() else again.stderr.strip()
    ha.reports.append(report)
    print(f"\n{report.table()}")
    return report


def assert_held(report: Report, also_allowed: frozenset[str] = frozenset()) -> None:
    assert report.failed.get("500", 0) == 0, report.table()
    assert report.audit_lost == 0, report.table()
    assert report.wrong_reveals == 0, report.table()
    assert report.reconcile == "nothing to repair", report.table()
    assert set(report.failed) <= {"503", *also_allowed}, report.table()  # every failure told the client to retry


def test_vault_limits_on_the_cluster(ha: HA) -> None:
    """Where Vault's own rates cap what more service replicas can add (the README's sizing uses these)."""
    rates = measure(ha.bao.leader().addr, ha.bao.root_token, seconds=3, concurrency=16)
    print(f"\nVault cluster (3 raft nodes, concurrency 16): {rates}")
    ha.limits.update(rates)
    assert rates["transit_encrypt_per_s"] > 0
    assert rates["kv_write_per_s"] > 0


async def test_raft_leader_killed(ha: HA) -> None:
    leader = ha.bao.leader()
    report = await drill(ha, "kill -9 the raft leader", lambda: ha.bao.kill(leader))
    ha.bao.revive(leader)
    assert_held(report)
    assert report.error_window < LEADER_KILL_WINDOW, report.table()


async def test_follower_sealed(ha: HA) -> None:
    follower = next(node for node in ha.bao.nodes if node.health() == 429)
    report = await drill(ha, "seal one raft follower", lambda: ha.bao.seal(follower))
    ha.bao.unseal(follower)
    ha.bao.wait_healthy()
    assert_held(report)
    assert report.failed == {}, report.table()


async def test_service_instance_killed(ha: HA) -> None:
    victim = ha.instances[0]
    report = await drill(ha, "kill -9 one service instance", victim.kill)
    victim.start()
    # Requests in flight on the killed process get no answer (the client sees the connection drop): never
    # acknowledged, so nothing is lost; new ones go to the other instance.
    assert_held(report, frozenset({"RemoteProtocolError", "ReadError"}))


async def test_if_match_holds_across_the_replicas_on_the_cluster(ha: HA) -> None:
    """Two instances, three Vault nodes, a replicated Postgres: of two writes with the same ETag, one wins."""
    headers = ha.load.headers
    first, second = (instance.url + API for instance in ha.instances)
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        created = await http.post(first, json=new_credential())
        cid, tag = created.json()["id"], created.headers["etag"]
        results = await asyncio.gather(
            http.put(f"{first}/{cid}", json={"credentials": {"api_key": "one"}}, headers={"If-Match": tag}),
            http.put(f"{second}/{cid}", json={"credentials": {"api_key": "two"}}, headers={"If-Match": tag}),
        )
        winner = next(r for r in results if r.status_code == 200)
        revealed = await http.post(f"{second}/{cid}/reveal")

    assert sorted(r.status_code for r in results) == [200, 412]
    assert revealed.json()["version"] == 2
    assert revealed.json()["credentials"]["api_key"] == ("one" if winner is results[0] else "two")


async def test_purge_across_the_replicas_destroys_the_secret_on_the_cluster(ha: HA) -> None:
    """Created on one instance, deleted on the other, purged by credctl: gone from every Vault node's view."""
    first, second = (instance.url + API for instance in ha.instances)
    async with httpx.AsyncClient(timeout=30, headers=ha.load.headers) as http:
        created = (await http.post(first, json=new_credential())).json()
        assert (await http.delete(f"{second}/{created['id']}")).status_code == 200
    purged = credctl("purge", env={**ha.env, "CREDENTIALS_DELETE_RETENTION": "0"})
    path = f"/v1/credentials/metadata/{secret_path(created['workspace_id'], created['id'])}"

    assert purged.returncode == 0, purged.stderr
    assert re.fullmatch(r"purged [1-9]\d* deleted credential\(s\) past the retention window\n", purged.stdout)
    for node in ha.bao.nodes:  # standbys forward (or serve) the read; none still holds the secret
        status = await asyncio.to_thread(
            lambda addr=node.addr: (
                requests.get(addr + path, headers={"X-Vault-Token": ha.bao.root_token}, timeout=10).status_code
            )
        )
        assert status == 404


async def test_single_flight_refresh_holds_across_the_replicas_on_the_cluster(
    ha: HA, token_server: TokenEndpoint
) -> None:
    """An expired rotating OAuth token revealed 20 times at once through both instances: one call to the provider,
    one new version, every caller served the same new access token."""
    token_server.reset()
    first, second = (instance.url + API for instance in ha.instances)
    async with httpx.AsyncClient(timeout=30, headers=ha.load.headers) as http:
        created = await http.post(
            first, json=new_credential(auth_type="oauth_token_refresh_rotation", credentials=oauth_secret(token_server))
        )
        cid = created.json()["id"]
        token_server.delay = 0.3  # the refresh stays in flight while the other callers arrive
        responses = await asyncio.gather(*(http.post(f"{first if i % 2 else second}/{cid}/reveal") for i in range(20)))
        listed = (await http.get(f"{first}/{cid}/versions")).json()["versions"]

    assert created.status_code == 200, created.text
    assert [r.status_code for r in responses] == [200] * 20
    assert token_server.calls == 1
    assert {r.json()["credentials"]["access_token"] for r in responses} == set(token_server.issued_access)
    assert [(v["version"], v["reason"]) for v in listed] == [(2, "refresh"), (1, "create")]


def transit_batch(store: SecretStore, call: CallContext) -> Coroutine[Any, Any, str]:
    return store.encrypt(call, f"cred-{secrets.token_hex(4)}", Secret(b"batched"))


def audited_encrypts(ha: HA, request_id: str) -> int:
    entries = [json.loads(line) for line in ha.bao.audit_log.read_text().splitlines()]
    return sum(
        1
        for e in entries
        if e["type"] == "request"
        and e["request"]["path"] == "transit/encrypt/credentials"
        and request_id in e["request"].get("headers", {}).get("x-request-id", [])
    )


async def test_the_fast_path_leaves_a_sealed_node_for_another_one(ha: HA) -> None:
    """The node the aiohttp transport used last is sealed: the next transit batch is served by another node."""
    store = SecretStore.connect(ha.bao.addrs, ha.bao.root_token, workers=2, timeout=5, failover_seconds=15)
    call = CallContext(request_id=f"req-seal-{secrets.token_hex(3)}", actor="drill", workspace="wsp_drill_fast")
    try:
        assert (await transit_batch(store, call)).startswith("vault:v")
        used = store.ring.preferred
        assert used == ha.bao.leader().addr  # the ring found the active node
        sealed = next(node for node in ha.bao.nodes if node.addr == used)
        ha.bao.seal(sealed)
        after = CallContext(request_id=f"req-sealed-{secrets.token_hex(3)}", actor="drill", workspace="wsp_drill_fast")
        ciphertext = await transit_batch(store, after)
        served_by = store.ring.preferred
    finally:
        await store.aclose()
    ha.bao.unseal(sealed)
    ha.bao.wait_healthy()

    assert ciphertext.startswith("vault:v")
    assert served_by != used
    assert audited_encrypts(ha, after.request_id) == 1  # a sealed node carried nothing out


async def test_the_fast_path_sends_a_batch_lost_on_a_killed_node_once_more(
    ha: HA, caplog: pytest.LogCaptureFixture
) -> None:
    """The node the transport calls is frozen while a transit batch is in flight, then killed (-9): the batch, lost,
    is sent once more to another node, which carries it out."""
    store = SecretStore.connect(ha.bao.addrs, ha.bao.root_token, workers=2, timeout=5, failover_seconds=15)
    call = CallContext(request_id=f"req-kill-{secrets.token_hex(3)}", actor="drill", workspace="wsp_drill_fast")
    victim = next(node for node in ha.bao.nodes if node.health() == 429)  # a standby: no election to wait for
    try:
        await transit_batch(store, call)  # connections are open, the ring has settled on the active node
        store.ring.found_active(ha.bao.nodes.index(victim))  # as if the victim were the node to ask
        assert victim.process is not None
        victim.process.send_signal(signal.SIGSTOP)
        lost = CallContext(request_id=f"req-lost-{secrets.token_hex(3)}", actor="drill", workspace="wsp_drill_fast")
        pending = asyncio.ensure_future(transit_batch(store, lost))
        await asyncio.sleep(0.5)  # the batch's request is in the frozen node's socket
        assert not pending.done()
        with caplog.at_level(logging.WARNING, logger="vault.nodes"):
            ha.bao.kill(victim)
            ciphertext = await pending
    finally:
        await store.aclose()
    ha.bao.revive(victim)

    assert ciphertext.startswith("vault:v")
    assert [r.getMessage() for r in caplog.records if r.name == "vault.nodes"] == [
        f"Vault node {victim.addr}: lost on POST /v1/transit/encrypt/credentials; trying another node"
    ]
    assert audited_encrypts(ha, lost.request_id) == 1  # the frozen node never carried it out; the repeat did


async def test_postgres_primary_killed_and_standby_promoted(ha: HA) -> None:
    def fail_over() -> None:
        ha.pg.primary.kill()
        ha.pg.promote()

    report = await drill(ha, "kill -9 the Postgres primary, promote the standby", fail_over)
    assert_held(report)


def test_drill_report_lists_every_drill(ha: HA) -> None:
    """The module's tables, together (the closing note copies them)."""
    assert [r.name for r in ha.reports] == [
        "kill -9 the raft leader",
        "seal one raft follower",
        "kill -9 one service instance",
        "kill -9 the Postgres primary, promote the standby",
    ]
    print("\n\n".join(r.table() for r in ha.reports))
