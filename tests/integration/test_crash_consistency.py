"""Crash consistency: the service killed (SIGKILL) between the steps of create, update, version restore and delete,
then ``credctl reconcile --apply``: every credential either exists whole (row and the value it served) or not at
all. The crash points are armed by ``CREDENTIALS_TEST_FAULT_POINT`` (dev mode only); the servers are the test's own.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import hvac
import pytest

from db.tables import Credential
from devtools.stack import BaoServer, bootstrap_dev_vault, start_bao
from service.auth.api_keys import create as create_api_key
from tests.support.api import API, new_credential
from tests.support.servers import credctl, env_for, running_app, serving, settings_for
from vault.store import secret_path

pytestmark = [pytest.mark.fault, pytest.mark.e2e]


@pytest.fixture(scope="module")
def crash_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """An OpenBao of this module's own, so that reconcile sweeps only the secrets these tests wrote."""
    server = start_bao(tmp_path_factory.mktemp("crash-bao"), audit=False)
    try:
        bootstrap_dev_vault(server)
        yield server
    finally:
        server.stop()


@dataclass
class Case:
    """One crash: the armed point, the requests that lead to it (the last one dies), and what must hold after
    reconcile: the credential's value (None: it must not exist at all)."""

    point: str
    before: Callable[[httpx.Client, dict[str, str]], str | None]
    crashing: Callable[[httpx.Client, dict[str, str], str | None], None]
    survives: dict[str, str] | None
    state_after_crash: str | None
    """The row's state the crash leaves (None: no row), proving the process died at that step."""


def create_one(http: httpx.Client, headers: dict[str, str]) -> str:
    created = http.post(API, json=new_credential(credentials={"api_key": "v1"}), headers=headers)
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def create_two_versions(http: httpx.Client, headers: dict[str, str]) -> str:
    cid = create_one(http, headers)
    assert http.put(f"{API}/{cid}", json={"credentials": {"api_key": "v2"}}, headers=headers).status_code == 200
    return cid


def nothing(http: httpx.Client, headers: dict[str, str]) -> None:
    return None


def crash_create(http: httpx.Client, headers: dict[str, str], cid: str | None) -> None:
    http.post(API, json=new_credential(credentials={"api_key": "lost"}), headers=headers)


def crash_update(http: httpx.Client, headers: dict[str, str], cid: str | None) -> None:
    http.put(f"{API}/{cid}", json={"credentials": {"api_key": "lost"}}, headers=headers)


def crash_restore(http: httpx.Client, headers: dict[str, str], cid: str | None) -> None:
    http.post(f"{API}/{cid}/versions/1/restore", headers=headers)


def crash_delete(http: httpx.Client, headers: dict[str, str], cid: str | None) -> None:
    http.delete(f"{API}/{cid}", headers=headers)


CASES = [
    Case("create.after_row", nothing, crash_create, None, "pending"),
    Case("create.after_vault_write", nothing, crash_create, None, "pending"),
    Case("update.after_vault_write", create_one, crash_update, {"api_key": "v1"}, "active"),
    Case("update.after_version_record", create_one, crash_update, {"api_key": "v1"}, "active"),
    Case("restore.after_vault_write", create_two_versions, crash_restore, {"api_key": "v2"}, "active"),
    Case("delete.after_hide", create_one, crash_delete, None, "deleting"),
    Case("delete.after_vault_destroy", create_one, crash_delete, None, "deleting"),
]


async def rows_of(workspace: str) -> list[dict[str, Any]]:
    return list(
        await Credential.select(Credential.id, Credential.state, Credential.kv_version).where(
            Credential.workspace_id == workspace
        )
    )


def kv_keys(bao: BaoServer, workspace: str) -> list[str]:
    kv = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2
    try:
        return list(
            kv.list_secrets(path=f"workspaces/{workspace}/credentials", mount_point="credentials")["data"]["keys"]
        )
    except hvac.exceptions.InvalidPath:
        return []


def kv_versions(bao: BaoServer, workspace: str, cid: str) -> dict[str, Any]:
    kv = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2
    return dict(
        kv.read_secret_metadata(path=secret_path(workspace, cid), mount_point="credentials")["data"]["versions"]
    )


QUICK = ["create.after_vault_write", "update.after_vault_write", "delete.after_hide"]
"""One real crash per operation in the default run (each costs a ``credctl serve`` start); every point runs with
``-m slow``, and in process in ``test_crash_property``."""


@pytest.mark.parametrize(
    "points",
    [
        pytest.param(QUICK, id="one-per-operation"),
        pytest.param([c.point for c in CASES], id="every-point", marks=pytest.mark.slow),
    ],
)
async def test_reconcile_repairs_a_crash_at_every_step_of_create_update_restore_and_delete(
    client: httpx.AsyncClient, database_url: str, crash_bao: BaoServer, points: list[str]
) -> None:
    settings = settings_for(database_url, crash_bao)
    crashed: list[tuple[Case, str, str | None]] = []
    for case in (c for c in CASES if c.point in points):
        workspace = f"wsp_crash_{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
        env = env_for(settings, CREDENTIALS_TEST_FAULT_POINT=case.point, CREDENTIALS_DELETE_RETENTION="0")
        with serving(env) as served, httpx.Client(base_url=served.url, timeout=30) as http:
            cid = case.before(http, headers)
            with pytest.raises(httpx.TransportError):  # the process died mid-request: no answer at all
                case.crashing(http, headers, cid)
        rows = await rows_of(workspace)
        if case.state_after_crash is None:
            assert rows == [], case.point
        else:
            assert [r["state"] for r in rows] == [case.state_after_crash], case.point
        if case.point.startswith(("update.", "restore.")):
            # KV is a version ahead of the row: written, never served.
            served_version = rows[0]["kv_version"]
            assert max(int(v) for v in kv_versions(crash_bao, workspace, str(cid))) == served_version + 1, case.point
        crashed.append((case, workspace, cid))

    repaired = credctl("reconcile", "--apply", "--older-than", "0", env=env_for(settings))
    assert repaired.returncode == 0, repaired.stderr
    assert "problem" not in repaired.stderr

    async with running_app(settings) as http:
        for case, workspace, cid in crashed:
            rows = await rows_of(workspace)
            headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'reveal'])).key}"}
            if case.survives is None:
                assert rows == [], case.point
                assert kv_keys(crash_bao, workspace) == [], case.point
                assert (await http.get(API, headers=headers)).json()["total"] == 0, case.point
                continue
            assert [(str(r["id"]), r["state"]) for r in rows] == [(cid, "active")], case.point
            revealed = await http.post(f"{API}/{cid}/reveal", headers=headers)
            assert revealed.status_code == 200, case.point
            assert revealed.json()["credentials"] == case.survives, case.point
            # The unserved version is destroyed: nothing in KV the row does not serve.
            versions = kv_versions(crash_bao, workspace, str(cid))
            unserved = [n for n, v in versions.items() if int(n) > rows[0]["kv_version"]]
            assert all(versions[n]["destroyed"] for n in unserved), case.point
            assert unserved, case.point
