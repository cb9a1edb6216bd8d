"""The service's Vault identity: least privilege (proved with the token the service holds), AppRole login with
renewal and re-login under load, a clear 503 when it can no longer log in, root tokens only in dev mode, and an
idempotent bootstrap."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
import requests
from litestar import Litestar

from devtools.stack import BaoServer, start_bao
from service.auth.api_keys import create as create_api_key
from service.config import Settings
from service.errors import SECRET_STORE_MISCONFIGURED
from tests.support.api import API, new_credential
from tests.support.servers import running_app, settings_for
from vault.bootstrap import (
    AUDITOR_POLICY,
    BootstrapError,
    bootstrap,
    check_audit_device,
    ensure_approle,
    issue_secret_id,
    write_approle_credentials,
)
from vault.client import make_client
from vault.store import SecretStore, derivation_context

CREDCTL = str(Path(sys.executable).parent / "credctl")


def credctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CREDCTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def app_of(client: httpx.AsyncClient) -> Litestar:
    app: Litestar = client._transport.app  # type: ignore[attr-defined]
    return app


def vault_call(bao: BaoServer, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    response = requests.request(
        method, f"{bao.addr}/v1/{path}", headers={"X-Vault-Token": token}, json=body, timeout=10
    )
    return response.status_code


def vault_json(bao: BaoServer, token: str, method: str, path: str) -> dict[str, Any]:
    response = requests.request(method, f"{bao.addr}/v1/{path}", headers={"X-Vault-Token": token}, timeout=10)
    body: dict[str, Any] = response.json()
    return body


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    """Records of the service's and vault's loggers, taken at the loggers themselves: the app's logging config
    sends the root logger's records through a queue, past pytest's caplog handler."""
    records: list[logging.LogRecord] = []
    handler = _Keep(records)
    loggers = [logging.getLogger(name) for name in ("service", "vault")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture
def admin(bao: BaoServer) -> Iterator[hvac.Client]:
    client = make_client(bao.addr, bao.token, pool_size=1, timeout=10)
    yield client
    client.adapter.close()


# -- least privilege -------------------------------------------------------------------------------------------


async def test_the_service_token_is_refused_outside_its_policy(
    approle_client: httpx.AsyncClient, approle_settings: Settings, bao: BaoServer
) -> None:
    store: SecretStore = app_of(approle_client).state.services.store
    token = store.token  # the token the running service holds, from its AppRole login
    context = derivation_context("wsp_x", "c1")
    ciphertext_request = {"plaintext": "aGk=", "context": context}
    lookup = vault_json(bao, token, "GET", "auth/token/lookup-self")
    assert lookup["data"]["policies"] == ["credentials-service"]
    assert lookup["data"]["display_name"] == "approle"

    refused = [
        # other KV paths on its mount, another mount, metadata outside its prefix
        ("GET", "credentials/data/elsewhere/secret"),
        ("POST", "credentials/data/workspaces/wsp_x/other/c1", {"data": {"a": "b"}}),
        ("GET", "credentials/data/workspaces/wsp_x/credentials/c1/deeper"),
        ("POST", "credentials/metadata/elsewhere", {"custom_metadata": {"a": "b"}}),
        ("LIST", "credentials/metadata/"),
        ("GET", "secret/data/anything"),
        ("POST", "secret/data/anything", {"data": {"a": "b"}}),
        ("PUT", "credentials/config", {"max_versions": 1}),
        # transit key administration, export, backup, another key
        ("GET", "transit/keys/credentials"),
        ("POST", "transit/keys/credentials/config", {"deletion_allowed": True}),
        ("POST", "transit/keys/credentials/config", {"exportable": True}),
        ("POST", "transit/keys/credentials/rotate"),
        ("POST", "transit/keys/credentials/trim", {"min_available_version": 1}),
        ("GET", "transit/export/encryption-key/credentials"),
        ("GET", "transit/backup/credentials"),
        ("DELETE", "transit/keys/credentials"),
        ("DELETE", "transit/keys/credentials/soft-delete"),
        ("POST", "transit/keys/other"),
        ("POST", "transit/encrypt/other", ciphertext_request),
        ("POST", "transit/config/keys", {"disable_upsert": False}),
        ("POST", "transit/datakey/plaintext/credentials", {"context": context}),
        # sys/: mounts, policies (no self-escalation), audit devices and headers, auth methods, tokens, AppRole
        ("GET", "sys/mounts"),
        ("POST", "sys/mounts/stolen", {"type": "kv"}),
        ("GET", "sys/policies/acl"),
        ("PUT", "sys/policies/acl/credentials-service", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
        ("GET", "sys/audit"),
        ("POST", "sys/audit-hash/file", {"input": "x"}),
        ("DELETE", "sys/config/auditing/request-headers/x-request-id"),
        ("GET", "sys/auth"),
        ("GET", "sys/capabilities-self"),
        ("POST", "auth/token/create", {}),
        ("POST", "auth/approle/role/credentials-service/secret-id", {}),
        ("GET", "auth/approle/role/credentials-service/role-id"),
    ]
    statuses = {(method, path): vault_call(bao, token, method, path, *body) for method, path, *body in refused}
    assert {call: status for call, status in statuses.items() if status != 403} == {}

    # ...while its job works with that same token.
    assert vault_call(bao, token, "POST", "transit/encrypt/credentials", ciphertext_request) == 200
    assert vault_call(bao, token, "LIST", "credentials/metadata/workspaces/") in (200, 404)
    assert vault_call(bao, token, "POST", "auth/token/renew-self", {}) == 200


def test_a_token_from_the_bootstrapped_approle_has_only_the_service_policy(
    approle_settings: Settings, bao: BaoServer
) -> None:
    """The brief's way too: log in with the role the bootstrap made, and call Vault with THAT token."""
    login = requests.post(
        f"{bao.addr}/v1/auth/approle/login",
        json={"role_id": approle_settings.vault.role_id, "secret_id": approle_settings.vault.secret_id},
        timeout=10,
    ).json()["auth"]
    assert login["policies"] == ["credentials-service"]
    assert login["token_policies"] == ["credentials-service"]
    token = login["client_token"]
    for method, path in (("GET", "sys/mounts"), ("GET", "transit/export/encryption-key/credentials")):
        assert vault_call(bao, token, method, path) == 403
    body = {"ciphertext": "vault:v1:AAAA", "context": derivation_context("w", "c")}
    assert vault_call(bao, token, "POST", "transit/decrypt/other", body) == 403


def test_the_auditor_reads_metadata_and_audit_hashes_but_cannot_decrypt(admin: hvac.Client, bao: BaoServer) -> None:
    path = f"workspaces/wsp_{secrets.token_hex(4)}/credentials/c1"
    ciphertext = admin.secrets.transit.encrypt_data(
        name="credentials", plaintext="aGk=", context=derivation_context("w", "c1")
    )["data"]["ciphertext"]
    admin.secrets.kv.v2.update_metadata(path=path, custom_metadata={"workspace_id": "w"}, mount_point="credentials")
    admin.secrets.kv.v2.create_or_update_secret(path=path, secret={"ciphertext": ciphertext}, mount_point="credentials")
    token = admin.auth.token.create(policies=[AUDITOR_POLICY], ttl="5m")["auth"]["client_token"]

    assert vault_call(bao, token, "GET", f"credentials/metadata/{path}") == 200
    assert vault_call(bao, token, "LIST", "credentials/metadata/workspaces/") == 200
    assert vault_call(bao, token, "POST", "sys/audit-hash/file", {"input": "x"}) == 200
    assert vault_call(bao, token, "GET", "sys/audit") == 200
    assert vault_call(bao, token, "GET", "transit/keys/credentials") == 200
    body = {"ciphertext": ciphertext, "context": derivation_context("w", "c1")}
    assert vault_call(bao, token, "POST", "transit/decrypt/credentials", body) == 403
    assert vault_call(bao, token, "GET", f"credentials/data/{path}") == 403
    assert vault_call(bao, token, "GET", "transit/export/encryption-key/credentials") == 403
    assert vault_call(bao, token, "GET", "auth/approle/role/credentials-service/role-id") == 403


# -- root tokens -----------------------------------------------------------------------------------------------


async def test_a_root_token_is_refused_outside_dev_mode(database_url: str, bao: BaoServer) -> None:
    with pytest.raises(ExceptionGroup) as failed:  # the lifespan's task group wraps the start-up error
        async with running_app(settings_for(database_url, bao, CREDENTIALS_DEV_MODE="false")):
            pass
    assert failed.group_contains(RuntimeError, match="root token, which the service accepts only in dev mode")


async def test_a_root_token_in_dev_mode_starts_with_a_warning(
    database_url: str, bao: BaoServer, logs: list[logging.LogRecord]
) -> None:
    async with running_app(settings_for(database_url, bao, CREDENTIALS_DEV_MODE="true")) as client:
        assert (await client.get("/health/ready")).status_code == 200
    warnings = [r.getMessage() for r in logs if r.levelno == logging.WARNING and r.name == "service"]
    assert any(message.startswith("DEV MODE: the service calls Vault with a root token") for message in warnings)


# -- renewal and re-login --------------------------------------------------------------------------------------


def short_lived_approle(admin: hvac.Client, ttl: str, max_ttl: str) -> tuple[str, str, str]:
    """A role of its own (so the session's role keeps its settings), with short-lived tokens."""
    role = f"short-{secrets.token_hex(3)}"
    ensure_approle(admin, role=role, token_ttl=ttl, token_max_ttl=max_ttl)
    role_id, secret_id = issue_secret_id(admin, role=role)
    return role, role_id, secret_id


def logged_in_as(database_url: str, bao: BaoServer, role_id: str, secret_id: str) -> Settings:
    """The service as production runs it (no dev mode), logged in with this AppRole."""
    return settings_for(
        database_url,
        bao,
        VAULT_TOKEN=None,
        VAULT_ROLE_ID=role_id,
        VAULT_SECRET_ID=secret_id,
        CREDENTIALS_DEV_MODE="false",
    )


async def test_short_lived_tokens_are_renewed_and_replaced_under_concurrent_requests(
    database_url: str, bao: BaoServer, admin: hvac.Client, logs: list[logging.LogRecord]
) -> None:
    _role, role_id, secret_id = short_lived_approle(admin, "3s", "8s")
    async with running_app(logged_in_as(database_url, bao, role_id, secret_id)) as client:
        store: SecretStore = app_of(client).state.services.store
        workspace = f"wsp_{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
        created = (await client.post(API, json=new_credential(credentials={"api_key": "kept"}), headers=headers)).json()
        tokens, statuses = {store.token}, []
        started = time.monotonic()
        while time.monotonic() - started < 15:  # about five token TTLs, two max TTLs
            tick = time.monotonic()
            replies = await asyncio.gather(
                *(client.post(f"{API}/{created['id']}/reveal", headers=headers) for _ in range(20))
            )
            statuses += [reply.status_code for reply in replies]
            assert all(reply.json()["credentials"] == {"api_key": "kept"} for reply in replies)
            tokens.add(store.token)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

    assert len(statuses) >= 200
    assert set(statuses) == {200}
    # Renewed at 2/3 of the TTL, and logged in again once renewal hit the 8 s max TTL.
    assert len(tokens) >= 2
    messages = [r.getMessage() for r in logs if r.name == "vault.auth"]
    assert sum(m.startswith("logged in to Vault with AppRole") for m in messages) >= 3
    assert not [m for m in messages if "failed" in m]


async def test_a_revoked_secret_id_gives_a_500_configuration_error_and_a_log_line_once_the_token_expires(
    database_url: str, bao: BaoServer, admin: hvac.Client, logs: list[logging.LogRecord]
) -> None:
    role, role_id, secret_id = short_lived_approle(admin, "2s", "3s")
    async with running_app(logged_in_as(database_url, bao, role_id, secret_id)) as client:
        workspace = f"wsp_{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
        created = (await client.post(API, json=new_credential(), headers=headers)).json()
        assert (await client.post(f"{API}/{created['id']}/reveal", headers=headers)).status_code == 200

        admin.adapter.post(f"/v1/auth/approle/role/{role}/secret-id/destroy", json={"secret_id": secret_id})
        await asyncio.sleep(4)  # past the token's max TTL: only a new login could help
        tick = time.monotonic()
        responses = await asyncio.gather(
            *(client.post(f"{API}/{created['id']}/reveal", headers=headers) for _ in range(5))
        )
        elapsed = time.monotonic() - tick

    # Retrying cannot help until an operator issues a new secret id: a configuration error, not "retry later".
    assert [r.status_code for r in responses] == [500] * 5
    assert all(r.json() == {"detail": SECRET_STORE_MISCONFIGURED} for r in responses)
    assert "retry-after" not in responses[0].headers
    assert elapsed < 3  # fails fast, no hang
    errors = [r.getMessage() for r in logs if r.levelno >= logging.ERROR]
    assert any(m.startswith("Vault login failed: AppRole login refused by Vault (") for m in errors), errors
    assert any(m.startswith("vault configuration error (VaultLoginFailed): AppRole login refused") for m in errors)
    assert not [r for r in logs if secret_id in r.getMessage()]


# -- bootstrap -------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_bao(tmp_path: Path) -> Iterator[BaoServer]:
    server = start_bao(tmp_path / "openbao")
    try:
        yield server
    finally:
        server.stop()


def test_bootstrap_twice_changes_nothing_the_second_time(fresh_bao: BaoServer, tmp_path: Path) -> None:
    client = make_client(fresh_bao.addr, fresh_bao.token, pool_size=1, timeout=10)
    names = {"transit_mount": "transit", "transit_key": "credentials", "kv_mount": "credentials"}
    try:
        first = bootstrap(client, **names)
        first += write_approle_credentials(client, tmp_path / "approle")
        first_audit = check_audit_device(client)
        second = bootstrap(client, **names)
        second += write_approle_credentials(client, tmp_path / "approle")
        second_audit = check_audit_device(client)
        key = client.secrets.transit.read_key(name="credentials")["data"]
        config = client.adapter.get("/v1/transit/config/keys")["data"]
        role = client.adapter.get("/v1/auth/approle/role/credentials-service")["data"]
        kv_config = client.adapter.get("/v1/credentials/config")["data"]
    finally:
        client.adapter.close()

    # Versions kept is the mount's config, so a create needs no per-key metadata call.
    assert kv_config["max_versions"] == 10

    assert [step.changed for step in first] == [True] * len(first)
    assert [step.changed for step in second] == [False] * len(first)
    # The same steps, by name (a new secret id's step also names its accessor).
    assert [step.what.split(" (")[0] for step in second] == [step.what.split(" (")[0] for step in first]
    assert first_audit == second_audit
    assert first_audit.changed is False
    assert first_audit.what == "audit device enabled: file/ (file)"
    assert (key["type"], key["derived"], key["exportable"], key["deletion_allowed"]) == (
        "aes256-gcm96",
        True,
        False,
        False,
    )
    assert key["allow_plaintext_backup"] is False
    assert config["disable_upsert"] is True
    assert (role["token_policies"], role["token_no_default_policy"], role["token_ttl"], role["token_max_ttl"]) == (
        ["credentials-service"],
        True,
        3600,
        14400,
    )
    assert (tmp_path / "approle" / "secret_id").stat().st_mode & 0o777 == 0o600


def test_vault_bootstrap_command_writes_approle_files_the_service_logs_in_with(
    fresh_bao: BaoServer, tmp_path: Path
) -> None:
    env = {"VAULT_ADDR": fresh_bao.addr, "VAULT_TOKEN": fresh_bao.token, "PATH": "/usr/bin:/bin"}
    out = tmp_path / "approle"
    first = credctl("vault-bootstrap", "--approle-out", str(out), env=env)
    second = credctl("vault-bootstrap", "--approle-out", str(out), env=env)
    rotated = credctl("vault-bootstrap", "--approle-out", str(out), "--new-secret-id", env=env)

    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "14 change(s)"
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "nothing to change: Vault was already bootstrapped"
    assert all(line.startswith("ok ") for line in second.stdout.splitlines()[:-1])
    assert "ok       audit device enabled: file/ (file)" in second.stdout.splitlines()
    assert rotated.stdout.splitlines()[-1] == "1 change(s)"
    login = requests.post(
        f"{fresh_bao.addr}/v1/auth/approle/login",
        json={"role_id": (out / "role_id").read_text().strip(), "secret_id": (out / "secret_id").read_text().strip()},
        timeout=10,
    )
    assert login.json()["auth"]["policies"] == ["credentials-service"]


def test_bootstrap_on_openbao_without_an_audit_device_says_to_declare_one(tmp_path: Path) -> None:
    """A server without the audit stanza: the check fails and explains OpenBao's declarative devices."""
    server = start_bao(tmp_path, audit=False)
    client = make_client(server.addr, server.token, pool_size=1, timeout=10)
    try:
        for enable_file in (None, str(tmp_path / "audit.log")):
            with pytest.raises(BootstrapError, match="OpenBao refuses to enable audit devices through the API"):
                check_audit_device(client, enable_file=enable_file)
    finally:
        client.adapter.close()
        server.stop()


async def test_a_secret_id_rotated_in_its_file_is_used_at_the_next_login(
    database_url: str, bao: BaoServer, admin: hvac.Client, tmp_path: Path
) -> None:
    """The rotation in docs/security.md: new secret id in VAULT_SECRET_ID_FILE, old one destroyed, no restart."""
    role, role_id, old_secret = short_lived_approle(admin, "1h", "4h")
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(old_secret + "\n")
    settings = settings_for(
        database_url,
        bao,
        VAULT_TOKEN=None,
        VAULT_ROLE_ID=role_id,
        VAULT_SECRET_ID_FILE=str(secret_file),
        CREDENTIALS_DEV_MODE="false",
    )
    async with running_app(settings) as client:
        store: SecretStore = app_of(client).state.services.store
        workspace = f"wsp_{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
        created = (await client.post(API, json=new_credential(), headers=headers)).json()

        secret_file.write_text(issue_secret_id(admin, role=role)[1] + "\n")
        admin.adapter.post(f"/v1/auth/approle/role/{role}/secret-id/destroy", json={"secret_id": old_secret})
        first_token = store.token
        admin.adapter.post("/v1/auth/token/revoke", json={"token": first_token})  # forces a new login now

        revealed = await client.post(f"{API}/{created['id']}/reveal", headers=headers)

        assert revealed.status_code == 200
        assert store.token != first_token
