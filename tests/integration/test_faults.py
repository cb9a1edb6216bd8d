"""Failures of the backends: a 503 with Retry-After, nothing half-written, and recovery once they are back.

Each test stops, seals or breaks only servers it started itself (its own OpenBao, its own embedded Postgres),
never the machine's shared Postgres.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import UUID

import httpx
import hvac
import pytest

from db.database import migrate
from db.tables import Credential
from devtools.stack import BaoServer, drop_database, ensure_database, start_bao, start_embedded_postgres
from devtools.stack import bootstrap_dev_vault as bootstrap_vault
from service.auth.api_keys import create as create_api_key
from tests.support.api import API, new_credential
from tests.support.servers import running_app, settings_for
from vault.store import secret_path

pytestmark = pytest.mark.fault

UNAVAILABLE_VAULT = {"detail": "The secret store is unavailable; retry later"}
UNAVAILABLE_DB = {"detail": "The database is unavailable; retry later"}


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[BaoServer]:
    server = start_bao(tmp_path / "openbao")
    try:
        bootstrap_vault(server)
        yield server
    finally:
        server.stop()


async def rows_in(workspace: str) -> list[dict[str, object]]:
    return await Credential.select(Credential.id, Credential.state, Credential.kv_version).where(
        Credential.workspace_id == workspace
    )


async def test_vault_sealed_then_killed(database_url: str, own_bao: BaoServer) -> None:
    # Deletes destroy at once here (no retention window), so a sealed Vault must refuse them.
    async with running_app(settings_for(database_url, own_bao, CREDENTIALS_DELETE_RETENTION="0")) as client:
        workspace = f"wsp_{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
        kept = (await client.post(API, json=new_credential(credentials={"api_key": "kept"}), headers=headers)).json()
        admin = hvac.Client(url=own_bao.addr, token=own_bao.token)

        admin.sys.seal()
        for method, path, body in (
            ("POST", "", new_credential()),
            ("POST", f"/{kept['id']}/reveal", None),
            ("PUT", f"/{kept['id']}", {"label": "changed", "credentials": {"api_key": "new"}}),
            ("DELETE", f"/{kept['id']}", None),
        ):
            response = await client.request(method, API + path, json=body, headers=headers)
            assert response.status_code == 503, (method, path)
            assert response.json() == UNAVAILABLE_VAULT
            assert response.headers["retry-after"] == "7"
            assert own_bao.addr not in response.text
        # Nothing half-written: the one credential, unchanged, still visible; no pending or deleting rows.
        assert await rows_in(workspace) == [{"id": UUID(kept["id"]), "state": "active", "kv_version": 1}]
        listed = (await client.get(API, headers=headers)).json()
        assert [c["label"] for c in listed["credentials"]] == [kept["label"]]

        admin.sys.submit_unseal_key(own_bao.unseal_key)
        revealed = await client.post(f"{API}/{kept['id']}/reveal", headers=headers)
        assert revealed.status_code == 200
        assert revealed.json()["credentials"] == {"api_key": "kept"}
        assert (await client.post(API, json=new_credential(), headers=headers)).status_code == 200

        own_bao.stop()
        refused = await client.post(API, json=new_credential(), headers=headers)
        assert refused.status_code == 503
        assert refused.json() == UNAVAILABLE_VAULT
        # List and get need Postgres only.
        assert (await client.get(API, headers=headers)).json()["total"] == 2
        assert len(await rows_in(workspace)) == 2
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"database": "ok", "vault": "unavailable"}}


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[object]:
    server = start_embedded_postgres(tmp_path / "pgdata")
    try:
        yield server
    finally:
        server.stop()


async def test_postgres_stopped_then_back(own_postgres: object, bao: BaoServer) -> None:
    server = own_postgres
    url = await ensure_database(server.url, "faults")  # type: ignore[attr-defined]
    await migrate(url)
    async with running_app(settings_for(url, bao, CREDENTIALS_DB_POOL_MIN="1")) as client:
        workspace = f"wsp_{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
        kept = (await client.post(API, json=new_credential(), headers=headers)).json()
        kv = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2

        server.stop()  # type: ignore[attr-defined]
        for method, path, body in (
            ("POST", "", new_credential()),
            ("GET", "", None),
            ("POST", f"/{kept['id']}/reveal", None),
        ):
            response = await client.request(method, API + path, json=body, headers=headers)
            assert response.status_code == 503, (method, path)
            assert response.json() == UNAVAILABLE_DB
            assert response.headers["retry-after"] == "7"
        # The refused create wrote nothing to Vault.
        keys = kv.list_secrets(path=f"workspaces/{workspace}/credentials", mount_point="credentials")["data"]["keys"]
        assert keys == [kept["id"]]

        server.start()  # type: ignore[attr-defined]
        statuses = [(await client.get(API, headers=headers)).status_code for _ in range(3)]
        # A pooled connection broken by the restart may fail once; then the pool reconnects.
        assert statuses[-1] == 200
        assert (await client.post(f"{API}/{kept['id']}/reveal", headers=headers)).status_code == 200
    await drop_database(server.url, "faults")  # type: ignore[attr-defined]


async def fail_when(sql_condition: str) -> None:
    """A trigger that makes Postgres refuse a row update: a real database failure at a chosen step."""
    await Credential.raw(
        "CREATE OR REPLACE FUNCTION fail_step() RETURNS trigger AS $$ BEGIN "
        f"IF {sql_condition} THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
    )
    await Credential.raw(
        "CREATE OR REPLACE TRIGGER fail_step BEFORE UPDATE ON credential FOR EACH ROW EXECUTE FUNCTION fail_step()"
    )


async def drop_failure() -> None:
    await Credential.raw("DROP TRIGGER IF EXISTS fail_step ON credential")


async def test_postgres_failing_after_the_vault_write_removes_the_secret(
    client: httpx.AsyncClient, bao: BaoServer
) -> None:
    workspace = f"wsp_{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
    await fail_when("NEW.state = 'active' AND NEW.label = 'doomed'")
    try:
        response = await client.post(API, json=new_credential(label="doomed"), headers=headers)
    finally:
        await drop_failure()

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert await rows_in(workspace) == []
    with pytest.raises(hvac.exceptions.InvalidPath):
        hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.list_secrets(
            path=f"workspaces/{workspace}/credentials", mount_point="credentials"
        )


async def test_update_that_postgres_refuses_keeps_serving_the_old_version(
    client: httpx.AsyncClient, bao: BaoServer
) -> None:
    workspace = f"wsp_{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
    created = (await client.post(API, json=new_credential(credentials={"api_key": "v1"}), headers=headers)).json()
    await fail_when("NEW.label = 'refused'")
    try:
        refused = await client.put(
            f"{API}/{created['id']}", json={"label": "refused", "credentials": {"api_key": "v2"}}, headers=headers
        )
    finally:
        await drop_failure()
    assert refused.status_code == 500

    # KV got version 2, Postgres did not: the API still serves version 1.
    revealed = (await client.post(f"{API}/{created['id']}/reveal", headers=headers)).json()
    assert (revealed["version"], revealed["credentials"]) == (1, {"api_key": "v1"})
    # The next update heals it: the unserved version is destroyed and the new one written on top.
    healed = await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": "v3"}}, headers=headers)
    assert healed.status_code == 200
    revealed = (await client.post(f"{API}/{created['id']}/reveal", headers=headers)).json()
    assert (revealed["version"], revealed["credentials"]) == (3, {"api_key": "v3"})
    path = secret_path(workspace, created["id"])
    versions = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.read_secret_metadata(
        path=path, mount_point="credentials"
    )["data"]["versions"]
    assert versions["2"]["destroyed"] is True
