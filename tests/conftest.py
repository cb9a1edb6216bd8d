"""Session fixtures: a real OpenBao and a real Postgres, a database of the session's own, the app in process.

Fixture order (design.md): Postgres server -> session database + migrations -> OpenBao + bootstrap -> settings
-> app (lifespan entered once) -> HTTP client. Each test gets its own workspace and keys; rows are removed after
each test, so no test depends on another's data or on order.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from db.engine import migrate
from db.tables import ApiKey, Credential
from service.app import create_app
from service.auth import create_api_key
from service.config import Settings
from service.devstack import (
    LOCAL_POSTGRES_URL,
    BaoServer,
    drop_database,
    ensure_database,
    postgres_answers,
    start_bao,
    start_embedded_postgres,
)
from tests.helpers import Caller, MakeCaller, env_for, serving
from tests.tokens import AUDIENCE, HS256_SECRET, ISSUER, write_jwks
from vault.bootstrap import bootstrap
from vault.client import make_client


def docker_answers() -> bool:
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Postgres server: the machine's own, else a testcontainers one (Docker), else embedded-postgres."""
    if postgres_answers():
        yield LOCAL_POSTGRES_URL
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17.6-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    embedded = start_embedded_postgres(tmp_path_factory.mktemp("pgdata"))
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    name = f"credtest_{secrets.token_hex(4)}"
    url = await ensure_database(postgres_server, name)
    await migrate(url)
    yield url
    await drop_database(postgres_server, name)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = start_bao(tmp_path_factory.mktemp("openbao"))
    try:
        bootstrap_vault(server)
        yield server
    finally:
        server.stop()


def bootstrap_vault(server: BaoServer) -> None:
    bootstrap(
        make_client(server.addr, server.token, pool_size=1, timeout=10),
        transit_mount="transit",
        transit_key="credentials",
        kv_mount="credentials",
    )


def settings_for(database_url: str, bao: BaoServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "vault_addr": bao.addr,
        "vault_token": bao.token,
        "dev_mode": True,
        "vault_workers": 8,
        "db_pool_max": 8,
        "retry_after_seconds": 7,
        # No background refresh passes: tests that want one start it themselves.
        "oauth_proactive_interval_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jwks(tmp_path_factory.mktemp("jwt") / "jwks.json")


@pytest.fixture(scope="session")
def settings(database_url: str, bao: BaoServer, jwks_file: Path) -> Settings:
    """The test app trusts user tokens signed with tests.tokens' HS256 secret, RSA key and EC key."""
    return settings_for(
        database_url,
        bao,
        jwt_hs256_secret=HS256_SECRET,
        jwt_public_keys_file=str(jwks_file),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )


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


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture(autouse=True)
async def _clean_rows(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "client" in request.fixturenames:
        await Credential.delete(force=True)
        await ApiKey.delete(force=True)


@pytest.fixture
def make_caller(client: httpx.AsyncClient) -> MakeCaller:
    async def make(workspace: str | None = None, permissions: tuple[str, ...] = ("read", "write", "reveal")) -> Caller:
        workspace = workspace or f"wsp_{secrets.token_hex(4)}"
        new = await create_api_key(workspace, list(permissions))
        return Caller(workspace, new.key, new.id)

    return make


@pytest.fixture
async def caller(make_caller: MakeCaller) -> Caller:
    return await make_caller()


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """A second service instance: ``credctl serve`` in a process of its own, on the session's database and Vault."""
    with serving(env_for(settings)) as server:
        yield server.url


@pytest.fixture(scope="session")
def approle_settings(settings: Settings, bao: BaoServer) -> Settings:
    """The service as production runs it: logged in with the AppRole the bootstrap created, not in dev mode."""
    from vault.bootstrap import issue_secret_id

    admin = make_client(bao.addr, bao.token, pool_size=1, timeout=10)
    try:
        role_id, secret_id = issue_secret_id(admin)
    finally:
        admin.adapter.close()
    # A small Postgres pool: this app lives beside the session's `client` app, on a server other sessions share.
    return settings_for(
        settings.database_url,
        bao,
        vault_token=None,
        vault_role_id=role_id,
        vault_secret_id=secret_id,
        dev_mode=False,
        db_pool_min=1,
        db_pool_max=4,
        # Deletes destroy at once, so the delete request itself is what the audit log must trace.
        delete_retention_seconds=0,
    )


@pytest.fixture(scope="session")
async def approle_client(client: httpx.AsyncClient, approle_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app started with ``approle_settings``. It depends on ``client`` so that the two apps' database bindings
    are entered and left in order (and so that ``_clean_rows`` cleans up after the tests using it)."""
    async with running_app(approle_settings) as approle:
        yield approle
