"""``credctl backup`` and ``credctl restore`` end to end: 100 credentials backed up from one stack (OpenBao with raft
storage, a database) and revealed, all of them with their values, from a stack restored into a FRESH OpenBao and a
fresh database. The figures (sizes, seconds) are printed; run with ``-s`` to see them."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.database import migrate
from devtools import stack
from devtools.stack import BaoServer
from service.auth.api_keys import create as create_api_key
from tests.support.api import new_credential
from tests.support.servers import credctl, env_for, running_app, settings_for

COUNT = 100


@pytest.fixture
def raft_bao(tmp_path: Path) -> Iterator[BaoServer]:
    """A real OpenBao with raft storage, bootstrapped as the service expects (the stack being backed up)."""
    server = stack.start_bao_raft(tmp_path / "source-bao")
    try:
        stack.bootstrap_dev_vault(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_bao(tmp_path: Path) -> Iterator[BaoServer]:
    """Another OpenBao with raft storage, initialised and unsealed, holding nothing (where the backup goes)."""
    server = stack.start_bao_raft(tmp_path / "target-bao")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def two_databases(postgres_server: str) -> Iterator[tuple[str, str]]:
    names = [f"credtest_bk_{secrets.token_hex(4)}" for _ in range(2)]
    urls = tuple(asyncio.run(stack.ensure_database(postgres_server, name)) for name in names)
    try:
        yield urls  # type: ignore[misc]
    finally:
        for name in names:
            asyncio.run(stack.drop_database(postgres_server, name))


async def test_backup_of_100_credentials_restores_into_a_fresh_openbao_and_database(
    tmp_path: Path, raft_bao: BaoServer, fresh_bao: BaoServer, two_databases: tuple[str, str]
) -> None:
    source_db, target_db = two_databases
    await migrate(source_db)
    source = settings_for(source_db, raft_bao)
    secrets_by_id: dict[str, dict[str, str]] = {}
    async with running_app(source) as client:
        key = (await create_api_key("wsp_backup", ["read", "write", "reveal"])).key
        headers = {"Authorization": f"Bearer {key}"}
        for n in range(COUNT):
            value = {"api_key": f"sk_backup_{n}_{secrets.token_hex(8)}"}
            created = await client.post("/api/v1/credentials", json=new_credential(credentials=value), headers=headers)
            assert created.status_code == 200, created.text
            secrets_by_id[created.json()["id"]] = value

    directory = tmp_path / "backup"
    started = time.monotonic()
    backed_up = await asyncio.to_thread(credctl, "backup", "--out", str(directory), env=env_for(source))
    backup_seconds = time.monotonic() - started
    assert backed_up.returncode == 0, backed_up.stderr
    manifest = json.loads((directory / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["openbao.snap", "postgres.dump"]
    assert manifest["rows"]["credential"] == COUNT
    assert backed_up.stdout.startswith(f"backed up into {directory}: postgres.dump ")

    # Restore into the fresh OpenBao (with its own root token) and the fresh, empty database.
    target_env = env_for(settings_for(target_db, fresh_bao))
    started = time.monotonic()
    restored = await asyncio.to_thread(credctl, "restore", "--from", str(directory), env=target_env)
    restore_seconds = time.monotonic() - started
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored from {directory}: ")
    assert restored.stdout.splitlines()[-1].startswith("OpenBao is sealed now: unseal it with the BACKED-UP cluster's")

    # The restored OpenBao holds the backed-up cluster's keyring and tokens: unsealed with its key, the service
    # logs in with its token.
    restored_bao = BaoServer(fresh_bao.addr, raft_bao.token, fresh_bao.audit_log, fresh_bao.log_file, fresh_bao.process)
    restored_bao.unseal_key = raft_bao.unseal_key
    stack.unseal(restored_bao)
    async with running_app(settings_for(target_db, restored_bao)) as client:
        started = time.monotonic()
        for credential_id, value in secrets_by_id.items():
            revealed = await client.post(f"/api/v1/credentials/{credential_id}/reveal", headers=headers)
            assert revealed.status_code == 200, revealed.text
            assert revealed.json()["credentials"] == value
        reveal_seconds = time.monotonic() - started
        listed = await client.get("/api/v1/credentials", params={"limit": 100}, headers=headers)
        assert listed.json()["total"] == COUNT

    sizes = {name: info["bytes"] for name, info in manifest["files"].items()}
    print(
        f"\nbackup/restore of {COUNT} credentials: sizes {sizes}; backup {backup_seconds:.2f} s, "
        f"restore {restore_seconds:.2f} s, reveal all {reveal_seconds:.2f} s"
    )


def test_restore_refuses_a_damaged_backup_or_a_database_in_use(
    tmp_path: Path, raft_bao: BaoServer, two_databases: tuple[str, str]
) -> None:
    source_db, target_db = two_databases
    asyncio.run(migrate(source_db))
    env = env_for(settings_for(source_db, raft_bao))
    directory = tmp_path / "backup"
    assert credctl("backup", "--out", str(directory), env=env).returncode == 0

    # A database with tables is refused before anything is touched.
    into_used = credctl("restore", "--from", str(directory), env=env)
    assert into_used.returncode == 2
    assert into_used.stderr.startswith("credctl: restore failed: the database already has tables (")

    with (directory / "openbao.snap").open("ab") as snap:
        snap.write(b"x")
    damaged = credctl("restore", "--from", str(directory), env=env_for(settings_for(target_db, raft_bao)))
    assert (damaged.returncode, damaged.stderr) == (
        2,
        f"credctl: restore failed: {directory / 'openbao.snap'} does not match its checksum in the manifest: "
        "the backup is damaged\n",
    )
    assert asyncio.run(_tables(target_db)) == []

    again = credctl("backup", "--out", str(directory), env=env)
    assert (again.returncode, again.stderr) == (
        2,
        f"credctl: backup failed: {directory} is not empty; back up into a new directory\n",
    )


async def _tables(url: str) -> list[str]:
    from db.dump import table_names

    return await table_names(url)


def test_backup_against_an_unreachable_database_is_one_line(tmp_path: Path, raft_bao: BaoServer) -> None:
    env = env_for(settings_for("postgresql://nobody@127.0.0.1:1/none", raft_bao))
    result = credctl("backup", "--out", str(tmp_path / "b"), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("credctl: backup failed: the database cannot be reached: ")
    assert len(result.stderr.splitlines()) == 1
