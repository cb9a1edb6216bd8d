"""The misconfiguration table: every way an operator can point the service at a dead, silent or wrong backend, or
give it a bad setting, ends ``credctl`` with ONE line on stderr naming the setting (or host) and what to do, a
non-zero exit status, and no traceback, within the configured connect timeout (real processes, real servers)."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from devtools.stack import BaoServer
from service.config import Settings
from tests.support.servers import credctl, env_for

# What a credctl process costs before it does anything (imports on a loaded 2-core machine), on top of the
# configured timeouts.
START_SLACK = 15.0


@dataclass(frozen=True)
class Case:
    """One row: the variables changed, the command, the whole stderr expected (a regex), the exit status, and how
    long it may take beyond the process's start."""

    id: str
    env: dict[str, str]
    expected: str
    status: int = 1
    command: tuple[str, ...] = ("purge",)
    seconds: float = 0.0
    unset: tuple[str, ...] = field(default=())


DB = r"DATABASE_URL \(postgres@127\.0\.0\.1:{port}/{db}\): "
SILENT, NOT_VAULT, PG = "{silent}", "{not_vault}", "{pg}"

CASES = [
    # -- Postgres ----------------------------------------------------------------------------------------------------
    Case("db-refused", {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
         DB.format(port=1, db="x") + r"connection refused by 127\.0\.0\.1:1; start Postgres or fix the host and port"),
    Case("db-missing", {"DATABASE_URL": "{pg_base}/credtest_no_such_db"},
         r"DATABASE_URL \(postgres@[\w.]+:\d+/credtest_no_such_db\): database 'credtest_no_such_db' does not exist on "
         r"[\w.]+:\d+; create it \(createdb credtest_no_such_db\) or fix DATABASE_URL"),
    Case("db-wrong-user", {"DATABASE_URL": "{pg_nobody}"},
         r"DATABASE_URL \(credtest_nobody@[\w.]+:\d+/postgres\): Postgres on [\w.]+:\d+ refused the login "
         r"\(role \"credtest_nobody\" does not exist\); fix the user or password in DATABASE_URL"),
    Case("db-silent", {"DATABASE_URL": "postgresql://postgres@127.0.0.1:{silent}/x", "CREDENTIALS_DB_CONNECT_TIMEOUT": "2"},
         DB.format(port=SILENT, db="x") + r"Postgres on 127\.0\.0\.1:{silent} did not answer within 2s "
         r"\(CREDENTIALS_DB_CONNECT_TIMEOUT\); check that the host and port are Postgres and that it is not overloaded",
         seconds=2),
    Case("db-unknown-host", {"DATABASE_URL": "postgresql://postgres@no-such-host.invalid:5432/x"},
         r"DATABASE_URL \(postgres@no-such-host\.invalid:5432/x\): cannot resolve host 'no-such-host\.invalid'; fix the host"),
    # -- Vault -------------------------------------------------------------------------------------------------------
    Case("vault-refused", {"VAULT_ADDR": "http://127.0.0.1:1"},
         r"VAULT_ADDR=http://127\.0\.0\.1:1: cannot reach Vault \(ConnectionError\); start Vault or OpenBao, or fix VAULT_ADDR"),
    Case("vault-not-vault", {"VAULT_ADDR": "http://127.0.0.1:{not_vault}"},
         r"VAULT_ADDR=http://127\.0\.0\.1:{not_vault} does not answer as Vault does \(token lookup: SecretNotFound\); fix "
         r"VAULT_ADDR \(scheme, host and port of Vault or OpenBao, without a path\)"),
    Case("vault-silent", {"VAULT_ADDR": "http://127.0.0.1:{silent}", "CREDENTIALS_VAULT_TIMEOUT": "2"},
         r"VAULT_ADDR=http://127\.0\.0\.1:{silent}: Vault did not answer within 2s \(CREDENTIALS_VAULT_TIMEOUT\); check "
         r"that VAULT_ADDR is Vault or OpenBao and that it is not overloaded", seconds=4),  # two calls: lookup, then check
    Case("vault-bad-token", {"VAULT_TOKEN": "s.not-a-real-token"},
         r"VAULT_TOKEN was refused by Vault at http://127\.0\.0\.1:\d+ \(expired, revoked or wrong\); give the service "
         r"a valid token, or AppRole credentials \(VAULT_ROLE_ID, VAULT_SECRET_ID\)"),
    Case("vault-bad-secret-id", {"VAULT_ROLE_ID": "no-such-role", "VAULT_SECRET_ID": "no-such-secret"},
         r"VAULT_ROLE_ID/VAULT_SECRET_ID \(AppRole login at http://127\.0\.0\.1:\d+\): AppRole login refused by Vault "
         r"\(invalid role or secret ID\): the secret id is revoked, expired or used up, or the role id is wrong; issue "
         r"a new secret id \(credctl vault-bootstrap --approle-out DIR --new-secret-id\) and restart the service"),
    # -- settings ----------------------------------------------------------------------------------------------------
    Case("vault-timeout-0", {"CREDENTIALS_VAULT_TIMEOUT": "0"},
         r"CREDENTIALS_VAULT_TIMEOUT='0' is out of range: must be greater than 0 and at most 300", status=2),
    Case("vault-timeout-nan", {"CREDENTIALS_VAULT_TIMEOUT": "nan"},
         r"CREDENTIALS_VAULT_TIMEOUT='nan' is out of range: must be greater than 0 and at most 300", status=2),
    Case("db-connect-timeout-0", {"CREDENTIALS_DB_CONNECT_TIMEOUT": "0"},
         r"CREDENTIALS_DB_CONNECT_TIMEOUT='0' is out of range: must be greater than 0 and at most 300", status=2),
    Case("log-level-loud", {"CREDENTIALS_LOG_LEVEL": "LOUD"},
         r"CREDENTIALS_LOG_LEVEL='LOUD' is not one of DEBUG, ERROR, INFO, WARNING", status=2),
    Case("max-body-0", {"CREDENTIALS_MAX_BODY_BYTES": "0"},
         r"CREDENTIALS_MAX_BODY_BYTES='0' is out of range: must be between 1,024 and 67,108,864", status=2),
    Case("retry-after-negative", {"CREDENTIALS_RETRY_AFTER": "-5"},
         r"CREDENTIALS_RETRY_AFTER='-5' is out of range: must be between 1 and 3,600", status=2),
    Case("vault-workers-100000", {"CREDENTIALS_VAULT_WORKERS": "100000"},
         r"CREDENTIALS_VAULT_WORKERS='100000' is out of range: must be between 1 and 256", status=2),
    Case("log-format-xml", {"CREDENTIALS_LOG_FORMAT": "xml"},
         r"CREDENTIALS_LOG_FORMAT='xml' is not one of json, text", status=2),
    # credctl dev reads the service's settings too (all but the backends it starts), before it starts anything.
    Case("dev-log-format-xml", {"CREDENTIALS_LOG_FORMAT": "xml"},
         r"CREDENTIALS_LOG_FORMAT='xml' is not one of json, text", status=2, command=("dev", "--port", "1")),
    Case("vault-cacert-missing", {"VAULT_CACERT": "/nonexistent/ca.pem"},
         r"VAULT_CACERT='/nonexistent/ca\.pem' cannot be read \(No such file or directory\); set it to the PEM file of "
         r"the CA that signed Vault's certificate \(just compose-certs writes one\)", status=2),
    # -- every command against a dead backend ------------------------------------------------------------------------
    *(
        Case(f"{'-'.join(command)}-db-refused", {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
             DB.format(port=1, db="x") + r"connection refused by 127\.0\.0\.1:1; start Postgres or fix the host and port",
             command=command)
        for command in (("migrate",), ("api-key", "create", "--workspace", "wsp_x"), ("reconcile",), ("purge",),
                        ("serve", "--port", "1"))
    ),
    *(
        Case(f"{'-'.join(command)}-vault-refused", {"VAULT_ADDR": "http://127.0.0.1:1"},
             r"VAULT_ADDR=http://127\.0\.0\.1:1: cannot reach Vault \(ConnectionError\); start Vault or OpenBao, or fix "
             r"VAULT_ADDR", command=command)
        for command in (("reconcile",), ("serve", "--port", "1"))
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers (a hung server, a firewall that swallows)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes the handshakes; nothing ever reads or writes
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture(scope="module")
def not_vault_port() -> Iterator[int]:
    """An HTTP server that answers 404 to everything (VAULT_ADDR pointing at some other web server)."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_misconfiguration_ends_credctl_with_one_line(
    case: Case, settings: Settings, bao: BaoServer, silent_port: int, not_vault_port: int
) -> None:
    server = settings.database.url.rsplit("/", 1)[0]
    values = {
        "silent": str(silent_port),
        "not_vault": str(not_vault_port),
        "pg_base": server,
        "pg_nobody": re.sub(r"//[^@/]*@", "//credtest_nobody@", server) + "/postgres",
    }
    env = env_for(settings, CREDENTIALS_DEV_MODE="true")
    env.update({name: value.format(**values) for name, value in case.env.items()})
    if "VAULT_ROLE_ID" in case.env:
        env.pop("VAULT_TOKEN", None)
    expected = case.expected.replace("{silent}", values["silent"]).replace("{not_vault}", values["not_vault"])

    started = time.monotonic()
    result = credctl(*case.command, env=env)
    elapsed = time.monotonic() - started

    assert re.fullmatch(f"credctl: {expected}\n", result.stderr), result.stderr
    assert result.returncode == case.status
    assert result.stdout == ""
    assert elapsed < case.seconds + START_SLACK
