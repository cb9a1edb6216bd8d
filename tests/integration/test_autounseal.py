"""Auto-unseal as compose runs it with OPENBAO_SEAL=static: vault/server.hcl plus vault/seal-static.hcl (OpenBao's
static seal, a 32-byte key file), initialised by vault/compose-init.sh, against a real `bao server` the test starts
and kills itself (no Docker)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import hvac
import pytest

from devtools.stack import free_port
from tests.support.openbao import health, local_config, local_seal_config, openbao_server, run_init

pytestmark = pytest.mark.fault


def seal_status(addr: str) -> dict[str, object]:
    client = hvac.Client(url=addr, token="")  # sys/seal-status needs no token
    try:
        status: dict[str, object] = client.sys.read_seal_status()
    finally:
        client.adapter.close()
    return status


def wait_for(check: str, log: Path) -> None:
    """Until the server's log shows `check` (what it did at start, not a timing assumption)."""
    deadline = time.monotonic() + 30
    while check not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def write_key(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(os.urandom(32))
    return path


def test_a_static_seal_unseals_itself_after_a_kill_and_a_wrong_key_leaves_it_sealed(tmp_path: Path) -> None:
    if not shutil.which("wget"):
        pytest.skip("the init script probes sys/health with wget (busybox's in the images); none on this machine")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    key = write_key(tmp_path / "openbao_seal_key")
    configs = [local_config(tmp_path, port), local_seal_config(tmp_path, key)]
    (tmp_path / "keys").mkdir()
    (tmp_path / "token").mkdir()
    log = tmp_path / "server.log"

    with openbao_server(configs, log, addr) as server:
        first = run_init(tmp_path, addr)
        assert first.returncode == 0, first.stderr
        root = (tmp_path / "token" / "openbao").read_text().strip()
        client = hvac.Client(url=addr, token=root)
        # KV version 1: no background upgrade to wait for (version 2 refuses writes for a moment after mounting).
        client.sys.enable_secrets_engine("kv", path="kv", options={"version": "1"})
        client.secrets.kv.v1.create_or_update_secret("probe", {"value": "autounseal-probe"}, mount_point="kv")
        client.adapter.close()
        server.kill()  # no seal, no graceful shutdown
        server.wait(15)

    with openbao_server(configs, log, addr):
        # Nothing sends a key: the listener answers, then the server opens its own seal and becomes active.
        deadline = time.monotonic() + 30
        while health(f"{addr}/v1/sys/health") != 200:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        restarted = seal_status(addr)
        client = hvac.Client(url=addr, token=root)
        value = client.secrets.kv.v1.read_secret("probe", mount_point="kv")
        client.adapter.close()

    key.write_bytes(os.urandom(32))  # another key than the one the server was initialised with
    with openbao_server(configs, log, addr):
        wait_for("failed to unseal core", log)
        wrong = seal_status(addr)
        refused = run_init(tmp_path, addr, timeout=2)

    init = json.loads((tmp_path / "keys" / "init.json").read_text())
    assert (len(init["recovery_keys_b64"]), init["unseal_keys_b64"]) == (1, [])
    assert first.stderr.splitlines() == [
        "compose-init: initialising: static seal (auto-unseal), 1 recovery key share, threshold 1 (demo only)",
        f"compose-init: ready: {addr} is initialised, unsealed and active; operator token in {tmp_path}/token/openbao",
    ]
    assert (restarted["type"], restarted["initialized"], restarted["sealed"]) == ("static", True, False)
    assert value["data"] == {"value": "autounseal-probe"}
    assert (wrong["type"], wrong["initialized"], wrong["sealed"]) == ("static", True, True)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        "compose-init: gave up after 2s waiting for the server to unseal itself with its static seal (a seal key it "
        f"was not initialised with leaves it sealed: restore that key) at {addr}"
    )
