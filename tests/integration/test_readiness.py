"""``/health/ready`` tells the truth (real OpenBao with restricted tokens, real Postgres), and a configuration error
met by a request is a 500 with a log line, not a 503 "retry later"."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import hvac
import pytest

import db
from devtools import stack
from devtools.stack import BaoServer
from service.auth.api_keys import create as create_api_key
from service.config import Settings
from service.errors import SECRET_STORE_MISCONFIGURED
from tests.support.api import API, new_credential
from tests.support.servers import running_app, settings_for
from vault.client import make_client

MIGRATE = "run `credctl migrate`"


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = _Keep(records)
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def admin(bao: BaoServer) -> Iterator[hvac.Client]:
    client = make_client(bao.addr, bao.token, pool_size=1, timeout=10)
    yield client
    client.adapter.close()


def token_with(admin: hvac.Client, *policies: str) -> str:
    token: str = admin.auth.token.create(
        policies=list(policies), ttl="10m", no_default_policy="default" not in policies
    )["auth"]["client_token"]
    return token


@pytest.fixture
async def unmigrated_database(postgres_server: str) -> AsyncIterator[str]:
    name = f"credtest_{secrets.token_hex(4)}"
    url = await stack.ensure_database(postgres_server, name)
    yield url
    await stack.drop_database(postgres_server, name)


async def test_ready_when_migrated_and_the_token_has_its_policy(client: httpx.AsyncClient) -> None:
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok", "checks": {"database": "ok", "vault": "ok"}})


async def test_an_unmigrated_database_is_not_ready_and_names_credctl_migrate(
    client: httpx.AsyncClient, unmigrated_database: str, bao: BaoServer
) -> None:
    settings = settings_for(unmigrated_database, bao, CREDENTIALS_PURGE_INTERVAL="0", CREDENTIALS_DB_POOL_MAX="2")
    async with running_app(settings) as unmigrated:
        ready = await unmigrated.get("/health/ready")

    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["vault"] == "ok"
    pending = len(list((Path(db.__file__).parent / "migrations").glob("db_*.py")))
    assert body["checks"]["database"].startswith(
        f"schema not migrated ({pending} migration(s) pending, e.g. 2026-11-26T18:40"
    )
    assert body["checks"]["database"].endswith(MIGRATE)


async def app_with_token(settings: Settings, bao: BaoServer, token: str, **extra: str) -> Settings:
    return settings_for(settings.database.url, bao, VAULT_TOKEN=token, CREDENTIALS_DB_POOL_MAX="2", **extra)


async def test_a_default_only_token_is_not_ready_and_a_create_is_a_500_configuration_error(
    client: httpx.AsyncClient, settings: Settings, bao: BaoServer, admin: hvac.Client, logs: list[logging.LogRecord]
) -> None:
    token = token_with(admin, "default")
    async with running_app(await app_with_token(settings, bao, token)) as restricted:
        ready = await restricted.get("/health/ready")
        key = (await create_api_key(f"wsp_{secrets.token_hex(4)}", ["read", "write", "reveal"])).key
        created = await restricted.post(API, json=new_credential(), headers={"Authorization": f"Bearer {key}"})

    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["vault"].startswith(
        "the token lacks update on transit/encrypt/credentials, update on "
    )
    assert ready.json()["checks"]["vault"].endswith(
        "; give it the credentials-service policy (`credctl vault-bootstrap`) "
        "or fix CREDENTIALS_TRANSIT_MOUNT, CREDENTIALS_TRANSIT_KEY, CREDENTIALS_KV_MOUNT"
    )
    assert (created.status_code, created.json()) == (500, {"detail": SECRET_STORE_MISCONFIGURED})
    assert "retry-after" not in created.headers
    errors = [r.getMessage() for r in logs if r.levelno >= logging.ERROR]
    assert any(
        m.startswith("vault configuration error (VaultPermissionDenied): ")
        and "permission denied" in m
        and "\n" not in m
        for m in errors
    )
    assert any(m.startswith("not ready: the token lacks update on transit/encrypt/credentials") for m in errors)
    assert token not in "\n".join(errors)


async def test_a_policy_for_another_kv_mount_is_not_ready(
    client: httpx.AsyncClient, settings: Settings, bao: BaoServer, admin: hvac.Client
) -> None:
    admin.sys.create_or_update_policy(
        "credtest-transit-only",
        'path "transit/encrypt/credentials" { capabilities = ["update"] }\n'
        'path "transit/decrypt/credentials" { capabilities = ["update"] }\n'
        'path "transit/rewrap/credentials" { capabilities = ["update"] }\n'
        'path "sys/capabilities-self" { capabilities = ["update"] }\n'
        'path "auth/token/lookup-self" { capabilities = ["read"] }\n',
    )
    token = token_with(admin, "credtest-transit-only")
    async with running_app(await app_with_token(settings, bao, token)) as restricted:
        ready = await restricted.get("/health/ready")

    assert ready.status_code == 503
    assert ready.json()["checks"]["vault"].startswith(
        "the token lacks create read update on credentials/data/workspaces/readiness/credentials/"
    )


async def test_a_wrong_transit_mount_is_not_ready_even_for_a_root_token(
    client: httpx.AsyncClient, settings: Settings, bao: BaoServer
) -> None:
    wrong = settings_for(
        settings.database.url, bao, CREDENTIALS_TRANSIT_MOUNT="transit-typo", CREDENTIALS_DB_POOL_MAX="2"
    )
    async with running_app(wrong) as misconfigured:
        ready = await misconfigured.get("/health/ready")

    assert ready.status_code == 503
    assert ready.json()["checks"]["vault"] == (
        "transit key transit-typo/credentials cannot encrypt (SecretNotFound); run `credctl vault-bootstrap` or fix "
        "CREDENTIALS_TRANSIT_MOUNT and CREDENTIALS_TRANSIT_KEY"
    )


async def test_the_service_policy_is_ready_under_approle(approle_client: httpx.AsyncClient) -> None:
    ready = await approle_client.get("/health/ready")
    assert (ready.status_code, ready.json()["checks"]) == (200, {"database": "ok", "vault": "ok"})
