"""The storage claims, checked from outside the API: Postgres and logs hold no secret; KV holds only ciphertext
bound to its workspace and credential."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import hvac
import pytest

from db.tables import Credential, CredentialVersion
from devtools.stack import BaoServer
from service.auth.api_keys import create as create_api_key
from service.config import Settings
from service.credentials.service import CredentialService, Lifecycle
from service.maintenance.purge import purge
from tests.support.api import API, Caller, MakeCaller, new_credential
from tests.support.servers import pg_dump_binary, running_app, settings_for
from vault.store import SecretStore, derivation_context, secret_path


def vault(bao: BaoServer) -> hvac.Client:
    return hvac.Client(url=bao.addr, token=bao.token)


async def test_no_secret_byte_in_postgres_or_logs(
    client: httpx.AsyncClient, caller: Caller, settings: Settings, bao: BaoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stored = [f"sk_live_{secrets.token_hex(16)}" for _ in range(3)]
    created = (
        await client.post(API, json=new_credential(credentials={"api_key": stored[0]}), headers=caller.headers)
    ).json()
    await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": stored[1]}}, headers=caller.headers)
    await client.post(f"{API}/{created['id']}/reveal", headers=caller.headers)
    # A refused request carrying a secret must not leak it either.
    refused = await client.post(
        API, json=new_credential(label="", credentials={"api_key": stored[2]}), headers=caller.headers
    )
    assert refused.status_code == 422

    dump = subprocess.run(
        [pg_dump_binary(), "--data-only", settings.database.url], capture_output=True, check=True, text=True
    ).stdout
    assert created["id"] in dump  # the dump is of the right database
    audit = bao.audit_log.read_text()
    for value in stored:
        encoded = base64.b64encode(value.encode()).decode()
        assert value not in dump
        assert value not in caplog.text
        assert value not in audit
        assert encoded not in audit
    assert caller.key.split("_", 2)[2] not in caplog.text


async def test_kv_holds_only_ciphertext_at_a_path_naming_its_owner(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    created = (
        await client.post(API, json=new_credential(credentials={"api_key": "kv-check"}), headers=caller.headers)
    ).json()
    path = secret_path(caller.workspace, created["id"])

    entry = vault(bao).secrets.kv.v2.read_secret_version(
        path=path, mount_point="credentials", raise_on_deleted_version=True
    )

    assert path == f"workspaces/{caller.workspace}/credentials/{created['id']}"
    assert list(entry["data"]["data"]) == ["ciphertext"]
    assert re.match(r"^vault:v\d+:[A-Za-z0-9+/=]+$", entry["data"]["data"]["ciphertext"])
    assert "kv-check" not in str(entry)
    # No metadata write on the hot path: the path names workspace and credential, the audit entry the actor.
    assert entry["data"]["metadata"]["custom_metadata"] is None
    assert entry["data"]["metadata"]["version"] == 1


async def test_ciphertext_decrypts_only_with_its_own_workspace_and_credential(
    client: httpx.AsyncClient, make_caller: MakeCaller, bao: BaoServer
) -> None:
    alice, bob = await make_caller(), await make_caller()
    mine = (
        await client.post(API, json=new_credential(auth_type="custom", credentials={"k": "v"}), headers=alice.headers)
    ).json()
    other = (await client.post(API, json=new_credential(), headers=alice.headers)).json()
    client_ = vault(bao)
    ciphertext = client_.secrets.kv.v2.read_secret_version(
        path=secret_path(alice.workspace, mine["id"]), mount_point="credentials", raise_on_deleted_version=True
    )["data"]["data"]["ciphertext"]

    def decrypt(workspace: str, credential: str) -> bytes:
        response = client_.secrets.transit.decrypt_data(
            name="credentials", ciphertext=ciphertext, context=derivation_context(workspace, credential)
        )
        return base64.b64decode(response["data"]["plaintext"])

    assert decrypt(alice.workspace, mine["id"]) == b'{"k":"v"}'
    for workspace, credential in ((bob.workspace, mine["id"]), (alice.workspace, other["id"])):
        with pytest.raises(hvac.exceptions.InvalidRequest, match="message authentication failed"):
            decrypt(workspace, credential)


async def test_a_ciphertext_moved_to_another_credentials_path_does_not_reveal(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    """Copying KV data between credentials (an attacker with KV write access) yields an error, not the secret."""
    first = (
        await client.post(
            API, json=new_credential(auth_type="custom", credentials={"k": "first"}), headers=caller.headers
        )
    ).json()
    second = (
        await client.post(
            API, json=new_credential(auth_type="custom", credentials={"k": "second"}), headers=caller.headers
        )
    ).json()
    kv = vault(bao).secrets.kv.v2
    stolen = kv.read_secret_version(
        path=secret_path(caller.workspace, first["id"]), mount_point="credentials", raise_on_deleted_version=True
    )["data"]["data"]
    kv.create_or_update_secret(
        path=secret_path(caller.workspace, second["id"]), secret=stolen, mount_point="credentials"
    )
    await Credential.update({Credential.kv_version: 2}).where(Credential.id == second["id"])

    response = await client.post(f"{API}/{second['id']}/reveal", headers=caller.headers)

    # Not "retry later" (it cannot succeed), and nothing of the other credential: a 500 and a log line.
    assert response.status_code == 500
    assert "first" not in response.text


async def test_delete_hides_at_once_and_the_purge_destroys_every_version(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer, settings: Settings
) -> None:
    created = (await client.post(API, json=new_credential(), headers=caller.headers)).json()
    await client.put(f"{API}/{created['id']}", json={"credentials": {"api_key": "v2"}}, headers=caller.headers)
    path = secret_path(caller.workspace, created["id"])
    kv = vault(bao).secrets.kv.v2
    assert kv.read_secret_metadata(path=path, mount_point="credentials")["data"]["current_version"] == 2

    assert (await client.delete(f"{API}/{created['id']}", headers=caller.headers)).status_code == 200
    assert (await client.get(f"{API}/{created['id']}", headers=caller.headers)).status_code == 404
    # Within the retention window the secret is still in Vault, so the credential can be restored.
    assert kv.read_secret_metadata(path=path, mount_point="credentials")["data"]["current_version"] == 2

    service = CredentialService(SecretStore.connect(bao.addr, bao.token, workers=1, timeout=5), Lifecycle())
    try:
        assert await purge(service, now=datetime.now(UTC) + timedelta(days=6)) == 0
        assert await purge(service, now=datetime.now(UTC) + timedelta(days=7, seconds=1)) == 1
    finally:
        await service.store.aclose()

    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=path, mount_point="credentials")
    assert await Credential.count().where(Credential.id == created["id"]) == 0
    assert await CredentialVersion.count().where(CredentialVersion.credential_id == created["id"]) == 0


async def test_delete_with_no_retention_destroys_at_once(database_url: str, bao: BaoServer) -> None:
    async with running_app(settings_for(database_url, bao, CREDENTIALS_DELETE_RETENTION="0")) as client:
        key = await create_api_key("wsp_immediate", ["read", "write"])
        headers = {"Authorization": f"Bearer {key.key}"}
        created = (await client.post(API, json=new_credential(), headers=headers)).json()

        assert (await client.delete(f"{API}/{created['id']}", headers=headers)).status_code == 200

        with pytest.raises(hvac.exceptions.InvalidPath):
            vault(bao).secrets.kv.v2.read_secret_metadata(
                path=secret_path("wsp_immediate", created["id"]), mount_point="credentials"
            )
        assert await Credential.count().where(Credential.id == created["id"]) == 0
        restored = await client.post(f"{API}/{created['id']}/restore", headers=headers)
        assert restored.status_code == 404


async def test_every_vault_call_carries_the_request_id_actor_and_workspace(
    client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    import json

    response = await client.post(API, json=new_credential(), headers={**caller.headers, "X-Request-Id": "req-audit-1"})
    assert response.status_code == 200
    entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
    ours = [e for e in entries if e["request"].get("headers", {}).get("x-request-id") == ["req-audit-1"]]

    paths = {e["request"]["path"] for e in ours}
    assert paths == {
        "transit/encrypt/credentials",
        f"credentials/data/workspaces/{caller.workspace}/credentials/{response.json()['id']}",
    }
    for entry in ours:
        assert entry["request"]["headers"]["x-credentials-actor"] == [caller.key_id]
        assert entry["request"]["headers"]["x-credentials-workspace"] == [caller.workspace]
