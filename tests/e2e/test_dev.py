"""``credctl dev`` as a developer runs it: the banner's commands pasted into a shell, two stacks on one machine,
Ctrl-C, and what is left afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import secrets
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.stack import free_port
from tests.support.api import new_credential
from tests.support.servers import CREDCTL, database_exists, processes

pytestmark = pytest.mark.e2e

BANNER_END = "Ctrl-C stops everything this command started."


def _env() -> dict[str, str]:
    """A developer's shell: none of the service's variables, and the virtualenv's bin/ NOT on PATH (as under
    ``just dev``), so a banner command calling a bare ``credctl`` would fail."""
    venv_bin = str(Path(CREDCTL).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CREDENTIALS_", "DATABASE_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env.pop("VIRTUAL_ENV", None)
    return env


@dataclass
class Dev:
    process: subprocess.Popen[str]
    printed: str
    port: int
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def line(self, pattern: str) -> re.Match[str]:
        found = re.search(pattern, self.printed, re.MULTILINE)
        assert found, self.printed
        return found

    def stop(self) -> str:
        with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile (a refusal)
            self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=60)
        return rest


@contextlib.contextmanager
def credctl_dev(tmp_path: Path, database: str, **settings: str) -> Iterator[Dev]:
    port, state_dir = free_port(), tmp_path / f"state-{secrets.token_hex(3)}"
    process = subprocess.Popen(
        [CREDCTL, "dev", "--port", str(port), "--state-dir", str(state_dir), "--database", database],
        env={**_env(), **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed: list[str] = []
    dev = Dev(process, "", port, state_dir)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(line.startswith(BANNER_END) for line in printed):
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line)
        dev.printed = "".join(printed)
        yield dev
    finally:
        dev.stop()


def _shell(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``command`` pasted into sh, in the developer's environment (plus ``extra``)."""
    return subprocess.run(
        command, shell=True, env={**_env(), **extra}, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_banner_appears_once_the_service_answers_and_its_commands_run_as_pasted(
    tmp_path: Path, postgres_server: str
) -> None:
    database = f"credtest_dev_{secrets.token_hex(4)}"
    # A setting of the service's own (not a backend's) is read as `credctl serve` reads it.
    with credctl_dev(tmp_path, database, CREDENTIALS_LOG_FORMAT="json") as dev:
        # Printed only once the port accepts connections: the first request after the banner succeeds, no retry.
        assert httpx.get(f"{dev.url}/health/live", timeout=5).status_code == 200, dev.printed
        key = dev.line(r"^API key \(workspace 'dev'; read, write, reveal, admin, use\): (ck_\S+)$")[1]
        database_url = dev.line(r"^DATABASE_URL: (\S+)$")[1]
        assert database_url.endswith(f"/{database}")

        # Every "Try" line, pasted into a shell as printed.
        tries = dev.printed.split("Try:\n", 1)[1].split(BANNER_END, 1)[0].splitlines()
        assert len(tries) == 2, dev.printed
        created = _shell(tries[0].strip())
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["label"] == "Stripe", created.stdout
        session = _shell(tries[1].strip())
        assert session.returncode == 0, session.stderr
        assert '"auth_provider":"jwt"' in session.stdout, session.stdout + session.stderr

        # The export line makes another shell's credctl reach this stack; credctl is called as the banner does.
        exports = dev.line(r"^  (export DATABASE_URL=.+)$")[1]
        credctl = shlex.split(dev.line(r"mint one: (\S+) dev-token")[1])[0]
        made = _shell(f"{exports} && KEY=$({shlex.quote(credctl)} api-key create --workspace dev) && echo $KEY")
        assert made.returncode == 0, made.stderr
        assert re.fullmatch(r"ck_\S+\n", made.stdout)

        headers = {"Authorization": f"Bearer {key}"}
        listed = httpx.get(f"{dev.url}/api/v1/credentials", headers=headers, timeout=10).json()
        assert [c["label"] for c in listed["credentials"]] == ["Stripe"]
        rest = dev.stop()
    assert dev.process.returncode == 0, rest
    access = [json.loads(line) for line in rest.splitlines() if line.startswith("{") and '"service.access"' in line]
    # One JSON access line per request (uvicorn's own are off), with the route and the caller's workspace.
    assert [(a["method"], a["route"], a["status"], a["workspace"]) for a in access if a["route"] != "/health/live"] == [
        ("POST", "/api/v1/credentials", 200, "dev"),
        ("GET", "/api/v1/auth/session", 200, "dev"),
        ("GET", "/api/v1/credentials", 200, "dev"),
    ], rest
    assert "stopped: OpenBao, the dev database and everything else this command started." in rest
    assert not dev.state_dir.exists()
    assert not [p for p in processes() if str(dev.state_dir) in p]
    assert not asyncio.run(database_exists(postgres_server, database))


def test_a_second_stack_on_the_same_database_refuses_and_the_first_keeps_working(
    tmp_path: Path, postgres_server: str
) -> None:
    database = f"credtest_dev_{secrets.token_hex(4)}"
    with credctl_dev(tmp_path, database) as first:
        key = first.line(r"^API key \(workspace 'dev'; [a-z, ]+\): (ck_\S+)$")[1]
        headers = {"Authorization": f"Bearer {key}"}
        before = httpx.post(f"{first.url}/api/v1/credentials", json=new_credential(), headers=headers, timeout=10)
        assert before.status_code == 200

        with credctl_dev(tmp_path, database) as second:
            second.process.wait(60)
        assert second.process.returncode == 2
        assert re.fullmatch(
            rf"credctl: database '{database}' already exists and is in use \(\d+ session\(s\): another credctl dev\?\); "
            rf"pass --database OTHER_NAME, or drop it if it is yours: dropdb {database}",
            second.printed.splitlines()[-1],
        ), second.printed
        assert "Traceback" not in second.printed

        # The first stack's data and key are untouched.
        after = httpx.get(f"{first.url}/api/v1/credentials/{before.json()['id']}", headers=headers, timeout=10)
        assert after.status_code == 200
        assert after.json() == before.json()
        assert httpx.post(f"{first.url}/api/v1/credentials", json=new_credential(), headers=headers).status_code == 200


def test_a_database_it_did_not_create_is_refused_and_kept(tmp_path: Path, postgres_server: str) -> None:
    database = f"credtest_dev_{secrets.token_hex(4)}"
    asyncio.run(_create_database(postgres_server, database))
    try:
        with credctl_dev(tmp_path, database) as dev:
            dev.process.wait(60)
        assert dev.process.returncode == 2
        assert f"credctl: database '{database}' already exists and is not in use;" in dev.printed
        assert asyncio.run(database_exists(postgres_server, database))
    finally:
        asyncio.run(_drop_database(postgres_server, database))


def test_ctrl_c_under_just_dev_stops_quietly_with_status_0(tmp_path: Path) -> None:
    """In a real terminal (a pty): the terminal's Ctrl-C, and what ``just`` says about it afterwards."""
    database, port = f"credtest_dev_{secrets.token_hex(4)}", free_port()
    just = str(Path(CREDCTL).parent / "just")
    command = [just, "dev", "--port", str(port), "--state-dir", str(tmp_path / "state"), "--database", database]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: becomes `just dev` in the pty, as a developer's shell would start it
        os.chdir(Path(__file__).parents[2])
        os.execve(just, command, _env())
    out = b""
    deadline, interrupted = time.monotonic() + 120, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.5)
        try:
            data = os.read(terminal, 4096) if ready else b""
        except OSError:  # the pty closes once every process holding it has gone
            break
        if ready and not data:
            break
        out += data
        if not interrupted and BANNER_END.encode() in out:
            os.write(terminal, b"\x03")  # what the Ctrl-C key sends
            interrupted = True
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    text = out.decode(errors="replace")
    assert interrupted, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert text.rstrip().endswith("stopped: OpenBao, the dev database and everything else this command started."), text
    assert "interrupted" not in text
    assert "terminated" not in text


async def _create_database(server_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(server_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
