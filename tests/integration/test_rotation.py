"""credctl rotate-key: the transit key rotates and every ciphertext is rewrapped while the API keeps serving."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import hvac
import pytest

from devtools.stack import BaoServer
from service.config import Settings
from service.maintenance.rotation import key_version_of, rewrap_all
from tests.support.api import API, Caller, new_credential
from vault import keys
from vault.store import SecretStore, secret_path

CREDCTL = str(Path(sys.executable).parent / "credctl")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SecretStore]:
    store = SecretStore.connect(settings.vault.addr, settings.vault.token or "", workers=4, timeout=5)
    yield store
    await store.aclose()


def ciphertext_of(bao: BaoServer, workspace: str, cid: str) -> str:
    entry = hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.read_secret_version(
        path=secret_path(workspace, cid), mount_point="credentials", raise_on_deleted_version=True
    )
    return str(entry["data"]["data"]["ciphertext"])


async def test_rotating_twice_under_concurrent_reads_keeps_every_credential_revealable(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer, store: SecretStore
) -> None:
    admin = hvac.Client(url=bao.addr, token=bao.token)
    secrets_by_id: dict[str, dict[str, str]] = {}
    for i in range(25):
        body = new_credential(credentials={"api_key": f"sk_rotate_{i}"})
        created = (await client.post(API, json=body, headers=caller.headers)).json()
        secrets_by_id[created["id"]] = {"api_key": f"sk_rotate_{i}"}
    ids = list(secrets_by_id)
    failures: list[str] = []
    stop = asyncio.Event()

    async def read_continuously() -> int:
        reads = 0
        while not stop.is_set():
            cid = random.choice(ids)
            response = await client.post(f"{API}/{cid}/reveal", headers=caller.headers)
            if response.status_code != 200 or response.json()["credentials"] != secrets_by_id[cid]:
                failures.append(f"{cid}: {response.status_code} {response.text[:100]}")
            reads += 1
        return reads

    readers = [asyncio.create_task(read_continuously()) for _ in range(4)]
    before = keys.latest_version(admin, "transit", "credentials")
    reports = []
    for _ in range(2):
        latest = keys.rotate(admin, "transit", "credentials")
        reports.append(await rewrap_all(store, latest, batch_size=10))
    stop.set()
    reads = sum(await asyncio.gather(*readers))

    assert failures == []
    assert reads > 0
    assert [r.key_version for r in reports] == [before + 1, before + 2]
    assert reports[0].rewrapped >= 25
    assert reports[1].rewrapped >= 25
    assert reports[1].skipped == []
    for cid, secret in secrets_by_id.items():
        assert key_version_of(ciphertext_of(bao, caller.workspace, cid)) == before + 2
        revealed = (await client.post(f"{API}/{cid}/reveal", headers=caller.headers)).json()
        assert revealed["credentials"] == secret
    versions = (await client.get(f"{API}/{ids[0]}/versions", headers=caller.headers)).json()["versions"]
    assert [v["reason"] for v in versions[:2]] == ["rewrap", "rewrap"]

    # Resuming finds nothing left to do.
    again = await rewrap_all(store, before + 2)
    assert (again.rewrapped, again.skipped) == (0, [])
    assert again.already_current >= 25


def test_credctl_rotate_key_with_min_decryption_version(settings: Settings, bao: BaoServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CREDENTIALS_", "DATABASE_"))}
    env.update(
        DATABASE_URL=settings.database.url,
        VAULT_ADDR=bao.addr,
        VAULT_TOKEN=bao.token,
        CREDENTIALS_DEV_MODE="true",
    )
    admin = hvac.Client(url=bao.addr, token=bao.token)
    before = keys.latest_version(admin, "transit", "credentials")

    result = subprocess.run(
        [CREDCTL, "rotate-key", "--min-decryption-version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert f"rotated to transit/keys/credentials v{before + 1}; rewrapping ..." in result.stdout
    assert f"transit key at v{before + 1}: " in result.stdout
    assert f"min_decryption_version is now {before + 1}" in result.stdout
    key = admin.secrets.transit.read_key(name="credentials")["data"]
    assert key["min_decryption_version"] == before + 1
    admin.adapter.post("/v1/transit/keys/credentials/config", json={"min_decryption_version": 1})
