"""TLS between the service and OpenBao: certificates from devtools/make-certs.sh, a real (not dev) OpenBao that
speaks only TLS, and every kind of connection the service makes to it (hvac, the aiohttp fast path, snapshots, the
``credctl`` commands) trusting exactly the CA that ``VAULT_CACERT`` names."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from db.tables import ApiKey, Credential
from devtools import stack
from devtools.stack import BaoServer
from service.auth.api_keys import create as create_api_key
from service.startup import StartupError
from tests.support.api import API, new_credential
from tests.support.compose import ROOT, posix_sh
from tests.support.servers import audit_log, credctl, env_for, running_app, settings_for
from vault import snapshot
from vault.errors import VaultTlsRefused
from vault.transport import VaultTransport, headers_of

MAKE_CERTS = ROOT / "devtools" / "make-certs.sh"
# Small pools: this app runs beside the session's own, on a Postgres server other sessions share.
SMALL = {"CREDENTIALS_DB_POOL_MIN": "1", "CREDENTIALS_DB_POOL_MAX": "2", "CREDENTIALS_VAULT_WORKERS": "2"}
UNTRUSTED = "certificate verify failed: unable to get local issuer certificate"


def make_certs(directory: Path) -> str:
    made = subprocess.run([posix_sh(), str(MAKE_CERTS), str(directory)], capture_output=True, text=True, check=True)
    return made.stdout


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs") / "tls"
    make_certs(directory)
    return directory


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[BaoServer]:
    server = stack.start_bao_tls(
        tmp_path_factory.mktemp("openbao-tls"),
        cert=certs / "server.pem",
        key=certs / "server-key.pem",
        cacert=certs / "ca.pem",
    )
    try:
        stack.bootstrap_dev_vault(server)
        yield server
    finally:
        server.stop()


def test_make_certs_writes_a_ca_and_a_server_certificate_for_the_compose_hosts_and_keeps_them(tmp_path: Path) -> None:
    directory = tmp_path / "tls"

    first = make_certs(directory)
    ca = (directory / "ca.pem").read_text()
    again = make_certs(directory)
    forced = subprocess.run(
        [posix_sh(), str(MAKE_CERTS), "--force", str(directory)], capture_output=True, text=True, check=True
    )

    assert first == (
        f"wrote {directory}/ca.pem, {directory}/ca-key.pem, {directory}/server.pem and {directory}/server-key.pem "
        "(CA and OpenBao certificate for openbao openbao-2 openbao-3 openbao-tls vault localhost, 127.0.0.1; "
        "825 days)\n"
    )
    assert again == (
        f"kept {directory}/ca.pem, {directory}/server.pem and {directory}/server-key.pem (--force makes new ones)\n"
    )
    assert forced.stdout.startswith(f"wrote {directory}/ca.pem")
    assert (directory / "ca.pem").read_text() != ca
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in directory.iterdir()}
    assert modes == {"ca.pem": "0o644", "server.pem": "0o644", "ca-key.pem": "0o600", "server-key.pem": "0o600"}
    text = subprocess.run(
        ["openssl", "x509", "-in", str(directory / "server.pem"), "-noout", "-ext", "subjectAltName,extendedKeyUsage"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sans = re.findall(r"(?:DNS|IP Address):[\w.-]+", text)
    assert sans == [
        "DNS:openbao",
        "DNS:openbao-2",
        "DNS:openbao-3",
        "DNS:openbao-tls",
        "DNS:vault",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ]
    assert "TLS Web Server Authentication" in text
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(directory / "ca.pem"), str(directory / "server.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


async def test_with_vault_cacert_the_service_bootstraps_stores_and_reveals_over_tls(
    database_url: str, tls_bao: BaoServer, certs: Path
) -> None:
    settings = settings_for(database_url, tls_bao, VAULT_CACERT=str(certs / "ca.pem"), **SMALL)
    assert tls_bao.addr.startswith("https://127.0.0.1:")

    bootstrapped = await asyncio.to_thread(credctl, "vault-bootstrap", env=env_for(settings))
    assert (bootstrapped.returncode, bootstrapped.stderr) == (0, "")
    # The fixture bootstrapped it in process; the command, over TLS with the CA, finds everything in place.
    assert bootstrapped.stdout.startswith("ok       transit engine at transit/\n")
    assert "created" not in bootstrapped.stdout

    workspace = f"wsp_tls_{secrets.token_hex(4)}"
    value = {"api_key": f"sk_tls_{secrets.token_hex(12)}"}
    async with running_app(settings) as client:
        try:
            headers = {"Authorization": f"Bearer {(await create_api_key(workspace, ['read', 'write', 'reveal'])).key}"}
            created = await client.post(API, json=new_credential(credentials=value), headers=headers)
            assert created.status_code == 200, created.text
            revealed = await client.post(f"{API}/{created.json()['id']}/reveal", headers=headers)
            assert (revealed.status_code, revealed.json()["credentials"]) == (200, value)
            ready = await client.get("/health/ready")
            assert ready.status_code == 200, ready.text
        finally:
            await Credential.delete().where(Credential.workspace_id == workspace)
            await ApiKey.delete().where(ApiKey.workspace_id == workspace)
    # Both halves of the secret's path went to the TLS server: transit encrypt/decrypt and the KV write/read.
    log = audit_log(tls_bao)
    credential_id = created.json()["id"]
    assert f"credentials/data/workspaces/{workspace}/credentials/{credential_id}" in log
    assert '"path":"transit/encrypt/credentials"' in log
    assert '"path":"transit/decrypt/credentials"' in log


async def test_the_aiohttp_fast_path_trusts_vault_cacert_and_refuses_vault_without_it(
    tls_bao: BaoServer, certs: Path
) -> None:
    headers = headers_of([("req_tls", "act_tls", "wsp_tls")])
    trusted = VaultTransport(tls_bao.addr, lambda: tls_bao.token, pool_size=1, timeout=5, cacert=str(certs / "ca.pem"))
    untrusted = VaultTransport(tls_bao.addr, lambda: tls_bao.token, pool_size=1, timeout=5)
    try:
        answer = await trusted.call("GET", "auth/token/lookup-self", headers)
        with pytest.raises(VaultTlsRefused) as refused:
            await untrusted.call("GET", "auth/token/lookup-self", headers)
    finally:
        await trusted.close()
        await untrusted.close()

    assert answer["data"]["policies"] == ["root"]
    assert str(refused.value) == f"TLS with Vault failed: {UNTRUSTED}"


def test_snapshots_trust_vault_cacert_and_refuse_vault_without_it(tls_bao: BaoServer, certs: Path) -> None:
    # The seal-status read of `credctl restore`, through the snapshot module's own session.
    assert snapshot.sealed_after_restore(tls_bao.addr, within=1, cacert=str(certs / "ca.pem")) is False
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        snapshot.sealed_after_restore(tls_bao.addr, within=1)


def test_without_vault_cacert_credctl_stops_with_one_line_naming_the_address_and_vault_cacert(
    database_url: str, tls_bao: BaoServer
) -> None:
    env = env_for(settings_for(database_url, tls_bao))

    result = credctl("reconcile", env=env)

    assert result.stderr == (
        f"credctl: VAULT_ADDR={tls_bao.addr}: Vault's TLS certificate was refused ({UNTRUSTED}) by the system's "
        "trust store; set VAULT_CACERT to the PEM file of the CA that signed it, or fix the host in VAULT_ADDR to one "
        "its certificate names\n"
    )
    assert (result.returncode, result.stdout) == (1, "")


async def test_a_vault_cacert_of_another_ca_stops_the_start_up_naming_it(
    database_url: str, tls_bao: BaoServer, tmp_path: Path
) -> None:
    make_certs(tmp_path / "other")
    other = str(tmp_path / "other" / "ca.pem")
    settings = settings_for(database_url, tls_bao, VAULT_CACERT=other, **SMALL)

    with pytest.raises(ExceptionGroup) as failed:  # the lifespan's task group wraps the start-up error
        async with running_app(settings):
            pass

    (error,) = failed.value.exceptions
    assert isinstance(error, StartupError)
    assert str(error) == (
        f"VAULT_ADDR={tls_bao.addr}: Vault's TLS certificate was refused (certificate verify failed: unable to get "
        f"local issuer certificate) with VAULT_CACERT={other}; set VAULT_CACERT to the CA that signed it, or fix the "
        "host in VAULT_ADDR to one its certificate names"
    )


def test_the_prod_profile_server_config_and_init_script_work_over_tls(tmp_path: Path, certs: Path) -> None:
    """vault/server-tls.hcl under the tests' bao binary (container paths moved to `tmp_path`, the certificates
    make-certs.sh wrote), initialised and unsealed by vault/compose-init.sh over https with INIT_CACERT.

    Its raft storage becomes in-memory storage: raft's first initialisation costs 10 s and more on a loaded machine,
    and tests/integration/test_compose_init.py runs the raft configuration (over http) already."""
    port = stack.free_port()
    text = (ROOT / "vault" / "server-tls.hcl").read_text()
    storage = re.search(r'^storage "raft" \{.*?^\}', text, re.MULTILINE | re.DOTALL)
    assert storage
    text = text.replace(storage[0], 'storage "inmem" {}')
    for old, new in {
        '"/openbao/logs/audit.log"': f'"{tmp_path / "audit.log"}"',
        '"/openbao/tls/server.pem"': f'"{certs / "server.pem"}"',
        '"/openbao/tls/server-key.pem"': f'"{certs / "server-key.pem"}"',
        '"0.0.0.0:8200"': f'"127.0.0.1:{port}"',
        '"https://openbao-tls:8200"': f'"https://127.0.0.1:{port}"',
        '"https://openbao-tls:8201"': f'"https://127.0.0.1:{stack.free_port()}"',
    }.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "server.hcl").write_text(text)
    addr = f"https://127.0.0.1:{port}"
    log = tmp_path / "bao.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [stack.bao_binary(), "server", f"-config={tmp_path / 'server.hcl'}"], stdout=out, stderr=out
        )
    try:
        env = {
            "PATH": f"{Path(stack.bao_binary()).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "INIT_ADDR": addr,
            "INIT_CACERT": str(certs / "ca.pem"),
            "INIT_KEYS_DIR": str(tmp_path / "keys"),
            "INIT_TOKEN_FILE": str(tmp_path / "token" / "openbao-tls"),
            "INIT_TOKEN_OWNER": "",
        }
        (tmp_path / "keys").mkdir()
        (tmp_path / "token").mkdir()
        init = subprocess.run(
            [posix_sh(), str(ROOT / "vault" / "compose-init.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert init.returncode == 0, init.stderr + log.read_text()[-2000:]
        assert init.stderr.splitlines()[-1] == (
            f"compose-init: ready: {addr} is initialised, unsealed and active; operator token in "
            f"{tmp_path / 'token' / 'openbao-tls'}"
        )
        token = (tmp_path / "token" / "openbao-tls").read_text().strip()
        health = requests.get(f"{addr}/v1/sys/health", timeout=5, verify=str(certs / "ca.pem"))
        assert (health.status_code, health.json()["sealed"]) == (200, False)
        looked_up = requests.get(
            f"{addr}/v1/auth/token/lookup-self",
            headers={"X-Vault-Token": token},
            timeout=5,
            verify=str(certs / "ca.pem"),
        )
        assert looked_up.json()["data"]["policies"] == ["root"]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{addr}/v1/sys/health", timeout=5)
    finally:
        process.terminate()
        process.wait(15)
