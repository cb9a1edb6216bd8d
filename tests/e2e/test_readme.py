"""The README's API calls, run as written: every `curl` in the API tables, and the line that reads an ETag, pasted
into bash against a real ``credctl serve`` with a key that holds every permission.

Each call gets the state it describes (a credential to read, a second version to reveal, a deleted credential to
bring back) from the README's own create, update and delete rows. Not run here: the compose commands (no Docker
engine on the machines this suite runs on), and the commands with placeholders an operator fills in
(``<operator token>``, ``db.internal``); tests/unit/test_compose.py and tests/e2e/test_cli.py cover those.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from tests.support.servers import credctl, env_for

pytestmark = pytest.mark.e2e

README = (Path(__file__).parents[2] / "README.md").read_text()


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


def test_every_api_call_in_the_readme_runs_as_written(served: str, settings: Settings) -> None:
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
