"""credctl as operators run it: separate processes, real OpenBao and Postgres, HTTP against a real uvicorn."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path

import httpx
import pytest

from devtools import stack
from devtools.stack import BaoServer, free_port
from service.config import Settings
from tests.support.api import new_credential
from tests.support.servers import credctl, env_for

MIGRATIONS = len(list((Path(__file__).parents[2] / "db" / "migrations").glob("db_*.py")))


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


def test_migrate_on_a_fresh_database_says_what_it_applied_in_one_line(postgres_server: str) -> None:
    name = f"credtest_{secrets.token_hex(4)}"
    url = asyncio.run(stack.ensure_database(postgres_server, name))
    try:
        result = credctl("migrate", env={"PATH": os.environ["PATH"], "DATABASE_URL": url})
    finally:
        asyncio.run(stack.drop_database(postgres_server, name))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"applied {MIGRATIONS} migration(s)\n"


def test_migrate_is_idempotent(settings: Settings) -> None:
    result = credctl("migrate", env=env_for(settings))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"database up to date: {MIGRATIONS} migration(s) already applied, none to apply\n"


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


def test_api_key_list_shows_a_workspaces_live_keys_without_secrets(settings: Settings) -> None:
    env, workspace = env_for(settings), f"wsp_{secrets.token_hex(4)}"
    kept = credctl("api-key", "create", "--workspace", workspace, "--label", "ci", env=env).stdout.strip()
    gone = credctl("api-key", "create", "--workspace", workspace, "--permissions", "read", env=env).stdout.strip()
    credctl("api-key", "create", "--workspace", f"{workspace}_other", env=env)
    listed = credctl("api-key", "list", "--workspace", workspace, env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header == ["id", "key", "status", "permissions", "expires_at", "label"]
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (gone[:19], "active", "read", "-", "-"),
        (kept[:19], "active", "read,write,reveal", "-", "ci"),
    ]
    assert kept not in listed.stdout
    assert gone not in listed.stdout

    assert credctl("api-key", "revoke", rows[0][0], env=env).returncode == 0
    after = credctl("api-key", "list", "--workspace", workspace, env=env).stdout.splitlines()
    assert [line.split("\t")[1] for line in after[1:]] == [kept[:19]]
