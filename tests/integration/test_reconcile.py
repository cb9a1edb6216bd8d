"""credctl reconcile: what a crash between Postgres and Vault leaves behind is found, reported, then repaired."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import hvac
import pytest

from db.tables import Credential
from devtools.stack import BaoServer
from service.config import Settings
from service.maintenance.reconcile import reconcile
from tests.support.api import API, Caller, new_credential
from vault.secret import Secret
from vault.store import CallContext, SecretStore, secret_path

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SecretStore]:
    store = SecretStore.connect(settings.vault.addr, settings.vault.token or "", workers=2, timeout=5)
    yield store
    await store.aclose()


def kv(bao: BaoServer) -> hvac.api.secrets_engines.KvV2:
    return hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2


async def test_reconcile_dry_run_reports_then_apply_repairs(
    client: httpx.AsyncClient, caller: Caller, store: SecretStore, bao: BaoServer
) -> None:
    ctx = CallContext(request_id="crash", actor=caller.key_id, workspace=caller.workspace)
    # 1. A create that crashed after the Vault write: the row is still pending.
    pending = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await Credential.update({Credential.state: "pending", Credential.updated_at: LONG_AGO}).where(
        Credential.id == pending["id"]
    )
    # 2. A delete that crashed before destroying the secret.
    deleting = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await Credential.update({Credential.state: "deleting", Credential.updated_at: LONG_AGO}).where(
        Credential.id == deleting["id"]
    )
    # 3. A secret whose row is gone.
    orphan = str(uuid.uuid4())
    await store.create(ctx, orphan, Secret(b'{"k":"v"}'))
    # 4. An update that wrote Vault but not Postgres.
    ahead = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await store.update(ctx, ahead["id"], Secret(b'{"k":"unserved"}'), expected_version=1)
    await Credential.update({Credential.updated_at: LONG_AGO}).where(Credential.id == ahead["id"])
    # 5. A healthy credential, and a fresh pending one (a create in flight): both left alone.
    healthy = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    in_flight = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await Credential.update({Credential.state: "pending"}).where(Credential.id == in_flight["id"])

    dry = await reconcile(store, apply=False, grace=timedelta(minutes=5))

    # Reconcile sweeps the whole (session-wide) Vault: what other tests left behind is theirs, so only this
    # workspace's findings are compared.
    assert sorted(a for a in dry.actions if caller.workspace in a) == sorted([
        f"would remove pending credential {pending['id']} (workspace {caller.workspace}) and destroy its secret",
        f"would remove deleting credential {deleting['id']} (workspace {caller.workspace}) and destroy its secret",
    ])  # fmt: skip
    # Nothing changed yet; the orphan, the unserved version (judged by its own age in KV, not the row's) and the
    # in-flight create are younger than the grace period.
    assert await Credential.count().where(Credential.workspace_id == caller.workspace) == 5

    applied = await reconcile(store, apply=True, grace=timedelta(seconds=0))

    assert f"destroy orphaned secret {caller.workspace}/{orphan} (no database row)" in applied.actions
    assert f"destroy unserved versions [2] of {ahead['id']}" in applied.actions
    assert f"remove pending credential {in_flight['id']} (workspace {caller.workspace}) and destroy its secret" in (
        applied.actions
    )
    remaining = await Credential.select(Credential.id).where(Credential.workspace_id == caller.workspace)
    assert sorted(str(r["id"]) for r in remaining) == sorted([ahead["id"], healthy["id"]])
    for gone in (pending["id"], deleting["id"], orphan, in_flight["id"]):
        with pytest.raises(hvac.exceptions.InvalidPath):
            kv(bao).read_secret_metadata(path=secret_path(caller.workspace, gone), mount_point="credentials")
    versions = kv(bao).read_secret_metadata(path=secret_path(caller.workspace, ahead["id"]), mount_point="credentials")
    assert versions["data"]["versions"]["2"]["destroyed"] is True
    revealed = (await client.post(f"{API}/{ahead['id']}/reveal", headers=caller.headers)).json()
    assert revealed["version"] == 1

    again = await reconcile(store, apply=True, grace=timedelta(seconds=0))
    assert [a for a in again.actions if caller.workspace in a] == []


async def test_reconcile_reports_an_active_credential_whose_secret_is_gone(
    client: httpx.AsyncClient, caller: Caller, store: SecretStore
) -> None:
    created = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await store.destroy(CallContext(request_id="test", actor="test", workspace=caller.workspace), created["id"])

    report = await reconcile(store, apply=True)

    mine = [p for p in report.problems if caller.workspace in p]
    assert mine == [f"credential {created['id']} (workspace {caller.workspace}) has no secret in Vault"]
    assert [a for a in report.actions if caller.workspace in a] == []
    # The credential stays: nothing can restore it, and deleting it silently would hide the loss.
    assert (await client.get(f"{API}/{created['id']}", headers=caller.headers)).status_code == 200


async def test_reconcile_leaves_soft_deleted_credentials_to_the_purge(
    client: httpx.AsyncClient, caller: Caller, store: SecretStore, bao: BaoServer
) -> None:
    created = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await Credential.update({Credential.updated_at: LONG_AGO}).where(Credential.id == created["id"])
    assert (await client.delete(f"{API}/{created['id']}", headers=caller.headers)).status_code == 200

    report = await reconcile(store, apply=True, grace=timedelta(seconds=0))

    # (Other tests' KV entries, whose rows were cleaned up, are orphans here and may be destroyed.)
    assert [action for action in report.actions if created["id"] in action] == []
    assert (await client.post(f"{API}/{created['id']}/restore", headers=caller.headers)).status_code == 200
    assert kv(bao).read_secret_metadata(path=secret_path(caller.workspace, created["id"]), mount_point="credentials")
