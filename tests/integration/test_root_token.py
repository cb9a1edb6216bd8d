"""The root token revoked once the bootstrap is done: `credctl vault-bootstrap --revoke-token` as compose's bootstrap
job runs it, against a real OpenBao started from vault/server.hcl (no Docker), then the next `up`'s init job and
bootstrap job without a token."""

from __future__ import annotations

import asyncio
import shutil
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from devtools.stack import free_port
from service.cli import main
from service.config import VaultSettings
from tests.support.openbao import local_config, openbao_server, run_init
from vault.secret import Secret
from vault.store import SERVICE_ACTOR, CallContext, SecretStore

NEW_ROOT = 'make a new root token from the unseal or recovery key (README: "Root token")'


def lookup_self(addr: str, token: str) -> int:
    request = urllib.request.Request(f"{addr}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def vault_bootstrap(addr: str, token: str, *args: str) -> Result:
    """`credctl vault-bootstrap ARGS` (in this process: a credctl process takes seconds to start on a busy machine)
    with what compose's bootstrap job has: VAULT_ADDR, and VAULT_TOKEN read from the init job's token file."""
    env = {"VAULT_ADDR": addr, "VAULT_TOKEN": token, "VAULT_ROLE_ID": None, "VAULT_SECRET_ID": None}
    return CliRunner().invoke(main, ["vault-bootstrap", *args], env=env, prog_name="credctl")


async def create_and_reveal(vault: VaultSettings) -> bytes:
    store = SecretStore.connect(vault.addr, vault.login(), workers=1, timeout=vault.timeout, fast_path=None)
    ctx = CallContext(request_id="test-root-token", actor=SERVICE_ACTOR, workspace="wsp_root_token")
    try:
        await store.start(ctx)
        stored = await store.create(ctx, "cred-root-token", Secret(b"sk_after_revocation"))
        return (await store.read(ctx, "cred-root-token", stored.version)).reveal()
    finally:
        store.close()


def test_bootstrap_revokes_the_root_token_the_service_keeps_working_and_later_runs_skip_in_one_line(
    tmp_path: Path,
) -> None:
    if not shutil.which("wget"):
        pytest.skip("the init script probes sys/health with wget (busybox's in the images); none on this machine")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    (tmp_path / "keys").mkdir()
    (tmp_path / "token").mkdir()
    token_file = tmp_path / "token" / "openbao"
    approle_dir = tmp_path / "approle"

    with openbao_server(local_config(tmp_path, port), tmp_path / "server.log", addr):
        first_init = run_init(tmp_path, addr)
        assert first_init.returncode == 0, first_init.stderr
        root = token_file.read_text().strip()
        first = vault_bootstrap(addr, root, "--approle-out", str(approle_dir), "--revoke-token")
        root_after = lookup_self(addr, root)
        revealed = asyncio.run(create_and_reveal(VaultSettings.with_approle_files(approle_dir, {"VAULT_ADDR": addr})))

        # The next `docker compose up`: the init job finds the root token refused and hands over an empty file; the
        # bootstrap job reads it (VAULT_TOKEN empty, so unset) and keeps what the first run set up.
        second_init = run_init(tmp_path, addr)
        handed_over = token_file.read_text()
        again = vault_bootstrap(addr, handed_over, "--approle-out", str(approle_dir))
        never_ran = vault_bootstrap(addr, handed_over, "--approle-out", str(tmp_path / "elsewhere"))

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1] == "revoked the operator token it was given (auth/token/revoke-self)"
    assert root_after == 403  # OpenBao answers a revoked token as any unknown one: permission denied
    assert revealed == b"sk_after_revocation"
    assert second_init.returncode == 0, second_init.stderr
    assert second_init.stderr.splitlines()[-1] == (
        f"compose-init: ready: {addr} is initialised, unsealed and active; the root token was revoked after the "
        'first bootstrap, so no operator token (to run the bootstrap again, make a new root token: README, "Root '
        'token")'
    )
    assert (handed_over, stat.S_IMODE(token_file.stat().st_mode)) == ("", 0o400)
    assert (again.exit_code, again.stderr) == (0, ""), again.stderr
    assert again.stdout.splitlines() == [
        f"skipped: no operator token (VAULT_TOKEN); the service's AppRole login with {approle_dir} works, so what the "
        f"earlier bootstrap set up is kept. To run it again, {NEW_ROOT}"
    ]
    assert (never_ran.exit_code, never_ran.stdout) == (2, "")
    assert never_ran.stderr.splitlines() == [
        f"credctl: vault-bootstrap needs an operator's token in VAULT_TOKEN; if the root token was revoked, {NEW_ROOT}"
    ]
