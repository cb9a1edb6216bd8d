"""The README's commands, run as written: every `curl` in the API tables, the line that reads an ETag and the API key
commands, pasted into bash against a real ``credctl serve`` with a key that holds every permission.

Each call gets the state it describes (a credential to read, a second version to reveal, a deleted credential to
bring back) from the README's own create, update and delete rows. Every other command of a ``sh``, ``bash`` or
``console`` block is accounted for below: run by another test (named, and checked to exist), or not runnable here
with the reason (the compose commands: no Docker engine on the machines this suite runs on; tests/unit/test_compose.py
checks the file instead). A command the README gains that is in none of the lists fails
``test_every_shell_command_in_the_readme_is_run_covered_or_explained``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from tests.support.servers import CREDCTL, credctl, env_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_commands(markdown: str) -> list[str]:
    """Every command of the markdown's sh, bash and console blocks, whitespace collapsed: lines joined where they end
    in a backslash or inside quotes, comments (a `#` starting a word outside quotes) left out."""
    found: list[str] = []
    for block in SHELL_BLOCK.findall(markdown):
        current: list[str] = []
        quote, word_start, i = "", True, 0
        while i < len(block):
            char = block[i]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#" and word_start:
                i = block.find("\n", i) if "\n" in block[i:] else len(block)
                continue
            elif char == "\\" and block[i + 1 : i + 2] == "\n":
                char, i = " ", i + 1
            elif char == "\n":
                found.append(" ".join("".join(current).split()))
                current, word_start, i = [], True, i + 1
                continue
            current.append(char)
            word_start = char.isspace() or char in ";|&("
            i += 1
        found.append(" ".join("".join(current).split()))
    return [command for command in found if command]


# Run as written by test_the_readmes_api_key_commands_run_as_written, in this order (KEY from the first).
API_KEY_COMMANDS = [
    "KEY=$(credctl api-key create --workspace wsp_acme --permissions read,write,reveal,admin --label bootstrap)",
    "credctl api-key create --workspace wsp_acme --permissions read --label ci --expires-at 2036-01-31T00:00:00+00:00",
    "credctl api-key list --workspace wsp_acme",
    'curl -s $API/api-keys -H "Authorization: Bearer $KEY" -H \'Content-Type: application/json\' -d \'{"label": "ci", '
    '"permissions": ["read", "write"], "expires_at": "2036-01-31T00:00:00Z"}\'',
    'curl -s $API/api-keys -H "Authorization: Bearer $KEY"',
    "credctl api-key create --workspace wsp_acme --permissions read,write --label ci",
]
# Run by another test, which this module checks exists.
COVERED = {
    "just compose-certs": "tests/integration/test_vault_tls.py::"
    "test_make_certs_writes_a_ca_and_a_server_certificate_for_the_compose_hosts_and_keeps_them",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/just dev":
        "tests/e2e/test_dev.py::test_ctrl_c_under_just_dev_stops_quietly_with_status_0",
    "KEY=ck_...": "tests/e2e/test_readme.py::test_every_api_call_and_api_key_command_in_the_readme_runs_as_written",
    "API=http://127.0.0.1:8000/api/v1": "tests/e2e/test_readme.py::test_every_api_call_and_api_key_command_in_the_readme_runs_as_written",
    "credctl api-key revoke 6f1c0c1e-...": "tests/e2e/test_access.py::test_cli_keys_can_expire_and_be_revoked_only_once",
    'curl -s -X DELETE $API/api-keys/6f1c... -H "Authorization: Bearer $KEY"':
        "tests/integration/test_auth.py::test_a_key_made_over_the_api_is_shown_once_and_works_until_revoked",
    "TOKEN=eyJhbGciOiJIUzI1NiIs...":
        "tests/integration/test_auth.py::test_session_of_a_user_carries_their_name_and_email",
    "curl -s $API/auth/session -H \"Authorization: Bearer supabase_$TOKEN\" -H 'X-Workspace-Id: wsp_acme'":
        "tests/integration/test_auth.py::test_session_of_a_user_carries_their_name_and_email",
    "curl -s -X POST $API/credentials -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' -d '{ "
    '"label": "Stripe", "auth_type": "api_key", "credential_scope": "workspace", "credentials": {"api_key": '
    '"sk_live_..."}, "proxy": {"base_url": "https://api.stripe.com", "methods": ["GET", "POST"], "path_prefixes": '
    '["/v1/charges"], "check": {"method": "GET", "path": "/v1/balance", "expected_status": 200}}}\'':
        "tests/integration/test_proxy.py::test_the_upstream_receives_the_secret_and_the_caller_never_does",
    'curl -s "$URL/api/v1/proxy/$ID/v1/charges?limit=3" -H "Authorization: Bearer $KEY"':
        "tests/integration/test_proxy.py::test_the_upstream_receives_the_secret_and_the_caller_never_does",
    "curl -s -X POST $API/credentials/$ID/grants -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' "
    '-d \'{"label": "billing agent", "ttl_seconds": 600, "methods": ["GET"], "path_prefixes": ["/v1/charges"], '
    '"max_uses": 20}\'': "tests/integration/test_grants.py::test_a_grant_uses_its_credential_and_can_do_nothing_else",
    'curl -s "$URL/api/v1/proxy/$ID/v1/charges" -H "Authorization: Bearer cg_..."':
        "tests/integration/test_grants.py::test_a_grant_uses_its_credential_and_can_do_nothing_else",
    "curl -X POST localhost:8000/api/v1/webhooks -H \"Authorization: Bearer $KEY\" -d '{\"url\": "
    '"https://hooks.example.com/credentials", "event_types": ["credential.refresh_failed", "credential.expiring"]}\'':
        "tests/integration/test_webhooks.py::test_every_event_type_is_delivered_once_with_a_valid_signature_and_no_secret",
    "VAULT_TOKEN=<operator token> credctl vault-bootstrap":
        "tests/e2e/test_cli.py::test_vault_bootstrap_twice_changes_nothing_the_second_time",
    "credctl migrate": "tests/e2e/test_cli.py::test_migrate_is_idempotent",
    "VAULT_TOKEN=<service token> credctl serve --host 0.0.0.0 --port 8000":
        "tests/e2e/test_cli.py::test_end_to_end_over_http",
    "credctl reconcile":
        "tests/integration/test_crash_consistency.py::"
        "test_reconcile_repairs_a_crash_at_every_step_of_create_update_restore_and_delete",
    "credctl purge": "tests/integration/test_lifecycle.py::test_credctl_purge_destroys_only_what_is_past_the_window",
    "VAULT_TOKEN=<operator token> credctl rotate-key":
        "tests/integration/test_rotation.py::test_credctl_rotate_key_with_min_decryption_version",
    "VAULT_TOKEN=<operator token> credctl backup --out /backups/2026-12-01":
        "tests/integration/test_backup.py::test_backup_of_100_credentials_restores_into_a_fresh_openbao_and_database",
    # The recipe runs devtools/compose-secrets.sh, which that test runs (checked below).
    "just compose-secrets":
        "tests/unit/test_compose.py::test_passwords_reach_the_containers_as_compose_secrets_from_files",
}  # fmt: skip
NO_DOCKER = "no Docker engine on this machine; tests/unit/test_compose.py checks compose.yaml"
# Not run anywhere in the suite, and why.
NOT_HERE = {
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/just test":
        "runs this whole suite; CI runs it",
    "export DATABASE_URL=postgresql://credentials@db.internal:5432/credentials": "an operator's host (db.internal)",
    "export VAULT_ADDR=https://vault.internal:8200": "an operator's host (vault.internal)",
    "docker compose up --build": NO_DOCKER,
    "VAULT_BACKEND=openbao-tls VAULT_SCHEME=https docker compose --profile prod up --build":
        f"{NO_DOCKER}; tests/unit/test_compose.py checks the prod profile, tests/integration/test_vault_tls.py runs its "
        "server config and init script",
    "OPENBAO_SEAL=static docker compose up --build":
        f"{NO_DOCKER}; tests/integration/test_autounseal.py runs its seal config against a real bao server",
    "docker compose exec openbao wget -qO- --post-data '{}' http://127.0.0.1:8200/v1/sys/generate-root/attempt":
        NO_DOCKER,
    "docker compose exec openbao wget -qO- --post-data '{\"key\": \"<key>\", \"nonce\": \"<nonce>\"}' "
    "http://127.0.0.1:8200/v1/sys/generate-root/update": NO_DOCKER,
    "python3 -c 'import base64, sys; print(bytes(a ^ b for a, b in zip(base64.b64decode(sys.argv[1] + \"==\"), "
    "sys.argv[2].encode())).decode())' \"<encoded_token>\" \"<otp>\"":
        "decodes what the generate-root commands before it print on a compose stack (no Docker engine here)",
    "docker compose run --rm -e VAULT_TOKEN=<new root token> bootstrap credctl vault-bootstrap --approle-out "
    "/run/approle --secret-id-ttl 720h --secret-id-cidr 172.28.0.0/24 --new-secret-id --revoke-token": NO_DOCKER,
}  # fmt: skip


def _api_rows() -> dict[str, str]:
    """``what -> command`` for every table row of the API section whose call is a curl command."""
    section = README.split("\n## API\n", 1)[1].split("\n## Callers\n", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `(curl [^`]+)`", section, re.MULTILINE)
    return dict(rows)


ROWS = _api_rows()
ETAG_LINE = re.search(r"`(ETAG=\$\(curl .+?\))`;", README)


def test_the_readme_has_the_calls_this_test_runs() -> None:
    assert set(ROWS) == {
        "create", "list", "get", "update", "reveal", "delete",
        "auth-type schemas (fields, which are secret or required)",
        "masked view (secrets under 16 characters fully hidden, longer ones but the last 4)",
        "retry safely (create, refresh, restore, version restore; the same key and body answer the first response again)",
        "conditional update",
        "versions, newest first",
        "reveal an older version",
        "make version n current again (as a new version; the current one is answered unchanged)",
        "disable / enable / revoke, with an optional reason",
        "undo a delete inside the retention window",
    }  # fmt: skip
    assert ETAG_LINE


class Shell:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, command: str) -> str:
        result = subprocess.run(
            ["bash", "-c", command], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        return result.stdout

    def json(self, what: str) -> Any:
        out = self.run(ROWS[what])
        body = json.loads(out)
        assert not (isinstance(body, dict) and "detail" in body), f"{what}: {out}"
        return body

    def fresh(self) -> str:
        """A new credential made by the README's create row; $ID names it from now on."""
        self.env["ID"] = self.json("create")["id"]
        return self.env["ID"]


def test_every_api_call_and_api_key_command_in_the_readme_runs_as_written(served: str, settings: Settings) -> None:
    env = env_for(settings)
    workspace = f"wsp_{secrets.token_hex(4)}"
    key = credctl("api-key", "create", "--workspace", workspace, "--permissions", "read,write,reveal,admin", env=env)
    assert key.returncode == 0, key.stderr
    shell = Shell({"PATH": env["PATH"], "API": f"{served}/api/v1", "KEY": key.stdout.strip()})

    created = shell.fresh()
    listed = shell.json("list")
    assert [c["id"] for c in listed["credentials"]] == [created]  # the list's filters match the create's body
    assert shell.json("get")["id"] == created
    assert shell.json("update")["label"] == "Stripe (rotated)"
    assert shell.json("reveal")["credentials"] == {"api_key": "sk_test_456"}
    assert shell.json("delete") == {"id": created, "deleted": True}
    assert shell.json("undo a delete inside the retention window")["id"] == created
    # Deleted again, then restored with an Idempotency-Key twice: the second answer is the first one, replayed (a
    # second plain restore would be refused: nothing is deleted any more).
    shell.json("delete")
    retry = "retry safely (create, refresh, restore, version restore; the same key and body answer the first response again)"
    first, again = shell.json(retry), shell.json(retry)
    assert first["id"] == created
    assert again == first

    schemas = shell.json("auth-type schemas (fields, which are secret or required)")
    assert [f["name"] for f in schemas["api_key"]["fields"]] == ["api_key", "expires_at"]
    masked = shell.json("masked view (secrets under 16 characters fully hidden, longer ones but the last 4)")
    assert masked["id"] == created
    assert "sk_test_456" not in json.dumps(masked)
    assert masked["masked_credentials"]["api_key"] == "*" * len("sk_test_456")  # 11 characters: all hidden

    # The ETag line as the README gives it, then the conditional update with it; then with a stale one: 412.
    shell.fresh()
    assert ETAG_LINE
    etag = shell.run(f"{ETAG_LINE[1]} && echo $ETAG").strip()
    assert re.fullmatch(r'(W/)?"[^"]+"', etag), etag
    shell.env["ETAG"] = etag
    assert shell.json("conditional update")["label"] == "Stripe (checked)"
    stale = shell.run(ROWS["conditional update"] + " -o /dev/null -w '%{http_code}'")
    assert stale == "412"

    shell.fresh()
    shell.json("update")  # version 2
    assert [v["version"] for v in shell.json("versions, newest first")["versions"]] == [2, 1]
    assert shell.json("reveal an older version")["version"] == 2
    restored = shell.json("make version n current again (as a new version; the current one is answered unchanged)")
    assert restored["id"] == shell.env["ID"]
    assert shell.json("disable / enable / revoke, with an optional reason")["status"] == "inactive"

    # The API key commands (one server for both: each `served` costs seconds to start).
    run_api_key_commands(env, served)


def test_the_command_parser_joins_continued_and_quoted_lines_and_drops_comments() -> None:
    markdown = '```sh\na \\\n  b   # note\n# whole line\nc \'{\n  "k": "#1"}\'\n```\n```text\nnot a command\n```\n'
    assert shell_commands(markdown) == ["a b", 'c \'{ "k": "#1"}\'']


def test_every_shell_command_in_the_readme_is_run_covered_or_explained() -> None:
    found = shell_commands(README)
    lists = (set(API_KEY_COMMANDS), set(COVERED), set(NOT_HERE))
    accounted = set().union(*lists)

    assert [command for command in found if command not in accounted] == []
    assert sorted(accounted - set(found)) == []  # an entry whose command the README no longer has
    assert sum(len(names) for names in lists) == len(accounted)  # each command in one list only
    for target in COVERED.values():
        path, name = target.split("::")
        assert re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE), target
    recipe = re.search(r"^compose-secrets:\n((?:    .+\n)+)", (ROOT / "justfile").read_text(), re.MULTILINE)
    assert recipe
    assert recipe[1].split() == ["sh", "devtools/compose-secrets.sh"]


def run_api_key_commands(env: dict[str, str], served: str) -> None:
    """API_KEY_COMMANDS as written, in order, in bash: credctl from this virtualenv, the served API, DATABASE_URL."""
    shell = Shell(
        {
            "PATH": f"{Path(CREDCTL).parent}{os.pathsep}{env['PATH']}",
            "API": f"{served}/api/v1",
            "DATABASE_URL": env["DATABASE_URL"],
        }
    )
    first, create_expiring, list_keys, create_over_api, list_over_api, create_plain = API_KEY_COMMANDS
    # The three creates at once (a credctl process takes seconds to start on a busy machine); the list after them.
    with ThreadPoolExecutor(3) as pool:
        made_key, made_expiring, made_plain = pool.map(
            shell.run, [f'{first} && printf "%s" "$KEY"', create_expiring, create_plain]
        )
    shell.env["KEY"] = made_key
    assert re.fullmatch(r"ck_[0-9a-f]+_\S+", shell.env["KEY"])
    expiring, plain = made_expiring, made_plain
    listing, over_api, listed_over_api = (shell.run(command) for command in (list_keys, create_over_api, list_over_api))

    assert re.fullmatch(r"ck_[0-9a-f]+_\S+\n", expiring)
    rows = [line.split("\t") for line in listing.splitlines()]
    assert rows[0] == ["id", "key", "status", "permissions", "expires_at", "label"]
    assert {(row[3], row[4][:10], row[5]) for row in rows[1:]} >= {
        ("read,write,reveal,admin", "-", "bootstrap"),
        ("read", "2036-01-31", "ci"),
    }
    made = json.loads(over_api)
    assert (made["label"], made["permissions"], made["secret"].startswith(made["key"])) == (
        "ci",
        ["read", "write"],
        True,
    )
    assert made["id"] in {key["id"] for key in json.loads(listed_over_api)["api_keys"]}
    assert re.fullmatch(r"ck_[0-9a-f]+_\S+\n", plain)
