"""vault/server.hcl and vault/compose-init.sh as the compose stack runs them, against a real OpenBao started from the
same binary the tests use (no Docker): initialise, unseal after a restart, bootstrap, and the service's AppRole login."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from devtools.stack import free_port
from service.config import Settings
from tests.support.compose import service_environ, services
from tests.support.openbao import health, local_config, openbao_server, run_init
from vault.bootstrap import bootstrap, write_approle_credentials
from vault.client import make_client
from vault.store import ANY_WORKSPACE, SERVICE_ACTOR, CallContext, SecretStore


def bootstrap_with(addr: str, token: str, approle_dir: Path) -> list[bool]:
    """Run the bootstrap as the compose job would (`--approle-out` to `approle_dir`), with `token`; which of its
    steps changed something."""
    client = make_client(addr, token, pool_size=1, timeout=10)
    try:
        steps = bootstrap(client, transit_mount="transit", transit_key="credentials", kv_mount="credentials")
        steps += write_approle_credentials(client, approle_dir)
    finally:
        client.adapter.close()
    return [step.changed for step in steps]


def service_login(addr: str, approle_dir: Path) -> tuple[str, ...]:
    """Log in as the compose service would, from its environment (the AppRole volume at `approle_dir`, the server at
    `addr`); the policies of the token it gets."""
    # The compose secret DATABASE_URL_FILE names (devtools/compose-secrets.sh writes it), beside the AppRole files.
    (approle_dir / "database_url").write_text("postgresql://credentials:compose-test@postgres:5432/credentials\n")
    environ = dict(service_environ(services()["service"], approle_dir))
    vault = Settings.from_env({**environ, "VAULT_ADDR": addr}).vault
    store = SecretStore.connect(vault.addr, vault.login(), workers=1, timeout=vault.timeout)
    try:
        token = asyncio.run(store.start(CallContext(request_id="test", actor=SERVICE_ACTOR, workspace=ANY_WORKSPACE)))
    finally:
        store.close()
    return token.policies


def test_init_script_initialises_then_unseals_after_a_restart_and_its_token_bootstraps(tmp_path: Path) -> None:
    if not shutil.which("wget"):
        pytest.skip("the init script probes sys/health with wget (busybox's in the images); none on this machine")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    config = local_config(tmp_path, port)
    (tmp_path / "keys").mkdir()
    (tmp_path / "token").mkdir()
    approle_dir = tmp_path / "approle"
    compose_check = urllib.parse.urlsplit(services()["openbao"]["healthcheck"]["test"][5])
    listener_check = f"{addr}{compose_check.path}?{compose_check.query}"

    with openbao_server(config, tmp_path / "server.log", addr):
        first = run_init(tmp_path, addr)
        token = (tmp_path / "token" / "openbao").read_text().strip()
        first_bootstrap = bootstrap_with(addr, token, approle_dir)
        first_login = service_login(addr, approle_dir)
        secret_id = (approle_dir / "secret_id").read_text()
    with openbao_server(config, tmp_path / "server.log", addr):
        sealed = (health(listener_check), health(f"{addr}/v1/sys/health"))
        second = run_init(tmp_path, addr)
        second_bootstrap = bootstrap_with(addr, token, approle_dir)
        second_login = service_login(addr, approle_dir)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stderr.splitlines() == [
        "compose-init: initialising: 1 key share, threshold 1 (demo only)",
        "compose-init: unsealing",
        f"compose-init: ready: {addr} is initialised, unsealed and active; operator token in {tmp_path}/token/openbao",
    ]
    assert first.stdout == second.stdout == ""
    # Restarted, the server is sealed; compose's healthcheck still passes, so the init job can start and unseal.
    assert sealed == (200, 503)
    assert second.stderr.splitlines()[:2] == ["compose-init: already initialised", "compose-init: unsealing"]
    assert (tmp_path / "token" / "openbao").read_text().strip() == token
    assert stat.S_IMODE((tmp_path / "token" / "openbao").stat().st_mode) == 0o400
    assert stat.S_IMODE((tmp_path / "keys" / "init.json").stat().st_mode) == 0o600
    # Everything the first bootstrap created survived the restart: real storage, not dev mode's memory.
    assert first_bootstrap == [True] * len(first_bootstrap)
    assert second_bootstrap == [False] * len(first_bootstrap)
    # The service logs in with the files the bootstrap wrote, and gets the service's policy only (no root token);
    # the secret id, still valid, is kept across the restart.
    assert first_login == second_login == ("credentials-service",)
    assert (approle_dir / "secret_id").read_text() == secret_id
    assert {stat.S_IMODE((approle_dir / name).stat().st_mode) for name in ("role_id", "secret_id")} == {0o600}
    audit_paths = {json.loads(line)["request"]["path"] for line in (tmp_path / "audit.log").read_text().splitlines()}
    assert "sys/mounts" in audit_paths
    assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o600
