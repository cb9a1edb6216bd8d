"""A property: whatever sequence of creates, updates, version restores and deletes runs, and wherever the process
dies in them (several times, with later writes running on what an earlier crash left), ``reconcile`` brings Vault
and Postgres back to a state where every credential exists whole, with the value of its last completed write, or
not at all.

Crashes are simulated in process (``service.faults.SimulatedCrash``: no undo, open transactions rolled back, Vault
writes kept), which is what SIGKILL leaves; ``test_crash_consistency`` proves the same with real processes.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.tables import Credential
from devtools.stack import BaoServer, bootstrap_dev_vault, start_bao
from service.auth.principal import Permission, Principal
from service.context import RequestContext
from service.credentials.schemas import CredentialCreate, CredentialUpdate
from service.credentials.service import CredentialService, Lifecycle
from service.faults import FaultPoints, SimulatedCrash
from service.maintenance.reconcile import reconcile
from tests.support.api import new_credential
from vault.store import CallContext, SecretStore

pytestmark = pytest.mark.fault

CRASHES = {
    "create": ["create.after_row", "create.after_vault_write"],
    "update": ["update.after_vault_write", "update.after_version_record"],
    "restore": ["restore.after_vault_write", "restore.after_version_record"],
    "delete": ["delete.after_hide", "delete.after_vault_destroy"],
}


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, int, str | None]:
    operation = draw(st.sampled_from(sorted(CRASHES)))
    crash = draw(st.none() | st.sampled_from(CRASHES[operation]))
    return operation, draw(st.integers(0, 3)), crash


@pytest.fixture(scope="module")
async def own_store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecretStore]:
    """A Vault of this module's own: reconcile sweeps all of it, so it must hold only what these examples wrote."""
    server: BaoServer = start_bao(tmp_path_factory.mktemp("property-bao"), audit=False)
    try:
        bootstrap_dev_vault(server)
        store = SecretStore.connect(server.addr, server.token, workers=4, timeout=10)
        yield store
        await store.aclose()
    finally:
        server.stop()


@dataclass
class Expected:
    """What the credentials must be after reconcile: id -> the value of each version, the served one last."""

    history: dict[uuid.UUID, list[str]] = field(default_factory=dict)

    def live(self) -> list[uuid.UUID]:
        return list(self.history)


def secret(value: str) -> dict[str, str]:
    return {"api_key": value}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(steps(), min_size=1, max_size=8))
async def test_reconcile_repairs_any_sequence_of_writes_and_crashes(
    client: httpx.AsyncClient, own_store: SecretStore, plan: list[tuple[str, int, str | None]]
) -> None:
    workspace = f"wsp_prop_{secrets.token_hex(4)}"
    principal = Principal(workspace_id=workspace, actor_id="prop", permissions=frozenset(Permission))
    ctx = RequestContext(f"prop-{secrets.token_hex(4)}", principal)
    expected = Expected()
    made = 0
    for operation, target, crash in plan:
        service = CredentialService(
            own_store, Lifecycle(delete_retention=timedelta(0)), faults=FaultPoints(raise_at=crash)
        )
        live = expected.live()
        cid = live[target % len(live)] if live else None
        made += 1
        value = f"value-{made}"
        try:
            if operation == "create":
                body = msgspec.convert(new_credential(credentials=secret(value)), CredentialCreate)
                created = await service.create(ctx, body)
                expected.history[created.id] = [value]
            elif cid is None:
                continue
            elif operation == "update":
                await service.update(ctx, str(cid), msgspec.convert({"credentials": secret(value)}, CredentialUpdate))
                expected.history[cid].append(value)
            elif operation == "restore":
                await service.restore_version(ctx, str(cid), 1)
                expected.history[cid].append(expected.history[cid][0])
            else:
                await service.delete(ctx, str(cid))
                del expected.history[cid]
        except SimulatedCrash:
            if operation == "delete":
                # The row is hidden before the first crash point: the delete happened, reconcile finishes it.
                del expected.history[cid]  # type: ignore[arg-type]

    report = await reconcile(own_store, apply=True, grace=timedelta(0))

    assert report.problems == []
    rows = await Credential.select(Credential.id, Credential.state, Credential.kv_version).where(
        Credential.workspace_id == workspace
    )
    assert sorted(r["id"] for r in rows) == sorted(expected.live())
    assert {r["state"] for r in rows} <= {"active"}
    reader = CredentialService(own_store)
    call = CallContext(request_id="check", actor="prop", workspace=workspace)
    for row in rows:
        revealed = await reader.reveal(ctx, str(row["id"]))
        assert revealed.credentials == secret(expected.history[row["id"]][-1])
        metadata = await own_store.metadata(call, str(row["id"]))
        assert metadata is not None
        above = [v for n, v in metadata["versions"].items() if int(n) > row["kv_version"]]
        assert all(v["destroyed"] for v in above)
    listed = await own_store.list_keys(call, f"workspaces/{workspace}/credentials")
    assert sorted(listed) == sorted(str(c) for c in expected.live())
    for row in rows:  # leave the next example an empty Vault
        await own_store.destroy(call, str(row["id"]))
    await Credential.delete().where(Credential.workspace_id == workspace)
