"""credctl as operators run it: separate processes, real OpenBao and Postgres, HTTP against a real uvicorn."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from devtools.stack import BaoServer, free_port
from service.config import Settings
from tests.support.api import new_credential
from tests.support.servers import CREDCTL, credctl, env_for


def test_api_key_create_prints_only_the_key(settings: Settings) -> None:
    result = credctl("api-key", "create", "--workspace", "wsp_cli", "--permissions", "read", env=env_for(settings))

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"ck_[a-z0-9]{16}_[A-Za-z0-9_-]{43}\n", result.stdout)


def test_api_key_create_refuses_unknown_permissions_and_bad_workspaces(settings: Settings) -> None:
    unknown = credctl("api-key", "create", "--workspace", "w", "--permissions", "read,root", env=env_for(settings))
    bad_workspace = credctl("api-key", "create", "--workspace", "a/b", env=env_for(settings))

    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert "root" in unknown.stderr
    assert (bad_workspace.returncode, bad_workspace.stdout) == (2, "")
    assert "workspace id" in bad_workspace.stderr


def test_missing_configuration_is_a_clear_error(settings: Settings) -> None:
    env = env_for(settings)
    del env["DATABASE_URL"]
    result = credctl("migrate", env=env)
    assert result.returncode == 2
    assert (
        result.stderr == "credctl: DATABASE_URL is required (e.g. postgresql://postgres@127.0.0.1:5432/credentials)\n"
    )


def test_migrate_is_idempotent(settings: Settings) -> None:
    result = credctl("migrate", env=env_for(settings))
    assert result.returncode == 0, result.stderr
    assert "No migrations need to be run" in result.stdout


def test_vault_bootstrap_twice_changes_nothing_the_second_time(settings: Settings, bao: BaoServer) -> None:
    result = credctl("vault-bootstrap", env=env_for(settings))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "nothing to change: Vault was already bootstrapped"
    assert all(line.startswith("ok ") for line in result.stdout.splitlines()[:-1])


@pytest.mark.e2e
def test_end_to_end_over_http(served: str, settings: Settings) -> None:
    workspace = f"wsp_{secrets.token_hex(4)}"
    key = credctl("api-key", "create", "--workspace", workspace, env=env_for(settings)).stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    secret = {"api_key": f"sk_e2e_{secrets.token_hex(8)}"}

    with httpx.Client(base_url=served, headers=headers, timeout=10) as http:
        created = http.post("/api/v1/credentials", json=new_credential(credentials=secret))
        assert created.status_code == 200
        credential_id = created.json()["id"]
        assert http.get("/api/v1/credentials").json()["total"] == 1
        assert http.get(f"/api/v1/credentials/{credential_id}").json() == created.json()
        assert http.put(f"/api/v1/credentials/{credential_id}", json={"label": "e2e"}).json()["label"] == "e2e"
        revealed = http.post(f"/api/v1/credentials/{credential_id}/reveal")
        assert revealed.json()["credentials"] == secret
        assert revealed.headers["cache-control"] == "no-store"
        assert http.delete(f"/api/v1/credentials/{credential_id}").status_code == 200
        assert http.get(f"/api/v1/credentials/{credential_id}").json() == {"detail": "Credential not found"}
        assert http.get("/api/v1/credentials", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get("/health/live").json() == {"status": "ok", "checks": {}}
        assert http.get("/schema/openapi.json").json()["paths"]["/api/v1/credentials"]["post"]["operationId"] == (
            "create_credential_api_v1_credentials_post"
        )


def test_serve_refuses_a_placeholder_token_outside_dev_mode(settings: Settings) -> None:
    env = env_for(settings, VAULT_TOKEN="root")
    del env["CREDENTIALS_DEV_MODE"]
    result = credctl("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "placeholder" in result.stderr


@pytest.mark.e2e
def test_credctl_dev_runs_the_stack_and_ctrl_c_leaves_nothing_behind(tmp_path: Path, postgres_server: str) -> None:
    port, state_dir, database = free_port(), tmp_path / "state", f"credtest_dev_{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CREDENTIALS_", "DATABASE_"))}
    process = subprocess.Popen(
        [CREDCTL, "dev", "--port", str(port), "--state-dir", str(state_dir), "--database", database],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(line.startswith("Ctrl-C stops") for line in printed):
            line = process.stdout.readline()
            assert line, "credctl dev exited early:\n" + "".join(printed)
            printed.append(line)
        text = "".join(printed)
        key = re.search(r"^API key \(workspace 'dev'; read, write, reveal, admin, use\): (ck_\S+)$", text, re.MULTILINE)
        assert key, text
        jwt_secret = re.search(
            r"^JWT HS256 secret \(user tokens; this run only\): ([0-9a-f]{64})   "
            r"mint one: credctl dev-token --workspace dev --role owner --secret ([0-9a-f]{64})$",
            text,
            re.MULTILINE,
        )
        assert jwt_secret, text
        assert jwt_secret.group(1) == jwt_secret.group(2)
        assert f"Credentials service: http://127.0.0.1:{port}" in text
        assert f"curl -s http://127.0.0.1:{port}/api/v1/credentials" in text
        # The printed session example mints its token with credctl dev-token; run that very command.
        session_hint = re.search(
            rf'^  curl -s http://127\.0\.0\.1:{port}/api/v1/auth/session -H "Authorization: Bearer \$\((.+)\)"$',
            text,
            re.MULTILINE,
        )
        assert session_hint, text
        mint = shlex.split(session_hint.group(1))
        assert mint == ["credctl", "dev-token", "--workspace", "dev", "--role", "owner", "--secret", jwt_secret[1]]
        minted = subprocess.run([CREDCTL, *mint[1:]], env=env, capture_output=True, text=True, timeout=60, check=True)
        url = f"http://127.0.0.1:{port}"
        for _ in range(50):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        created = httpx.post(f"{url}/api/v1/credentials", json=new_credential(), headers=headers, timeout=10)
        assert created.status_code == 200
        # The key holds admin: it manages the workspace's API keys, starting with itself.
        keys = httpx.get(f"{url}/api/v1/api-keys", headers=headers, timeout=10)
        assert keys.status_code == 200, keys.text
        assert [(k["workspace_id"], k["permissions"], k["label"]) for k in keys.json()["api_keys"]] == [
            ("dev", ["read", "write", "reveal", "admin", "use"], "credctl dev")
        ]
        assert key.group(1).startswith(keys.json()["api_keys"][0]["key"])
        # A user token minted with the printed secret is accepted: an owner of 'dev', with every permission.
        user = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        session = httpx.get(f"{url}/api/v1/auth/session", headers=user, timeout=10)
        assert session.status_code == 200, session.text
        assert session.json() == {
            "user": {"id": "dev-user", "email": None, "name": None},
            "workspace": {"id": "dev"},
            "workspace_user": {
                "role": "owner",
                "is_owner": True,
                "permissions": ["read", "write", "reveal", "admin", "use"],
                "status": "active",
            },
            "auth_type": "bearer_token",
            "auth_provider": "jwt",
            "api_key": None,
        }
        # Signed with another secret, the same claims are refused.
        forged = credctl("dev-token", "--workspace", "dev", "--secret", "f" * 64, env=env).stdout.strip()
        refused = httpx.get(f"{url}/api/v1/auth/session", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
        assert (refused.status_code, refused.json()) == (401, {"detail": "Invalid token"})
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "stopped: OpenBao, the dev database and everything else this command started." in rest
    assert not state_dir.exists()
    assert not [p for p in _processes() if str(state_dir) in p]
    assert not asyncio.run(_database_exists(postgres_server, database))


def _processes() -> list[str]:
    return [
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for pid in os.listdir("/proc")
        if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists()
    ]


async def _database_exists(server_url: str, name: str) -> bool:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()
