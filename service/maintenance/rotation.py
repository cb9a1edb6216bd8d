"""``credctl rotate-key``: rotate the transit key and rewrap every stored ciphertext to its newest version, online.

Each credential's current version is read from KV, rewrapped by Vault in batches (the plaintext never leaves
Vault; batches stay far below OpenBao's 1000-strings-per-request limit) and written back as a new KV version
with check-and-set, under the row lock the API's writers take. The API keeps serving throughout: readers use
the version the row names, which stays decryptable until ``min_decryption_version`` is raised.

Resumable: a ciphertext already at the newest key version is skipped, so running it again after an
interruption finishes the job.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from db import credentials as rows
from db import database, versions
from service.credentials.model import Status
from vault.errors import SecretNotFound, VersionConflict
from vault.store import ANY_WORKSPACE, CallContext, SecretStore

_KEY_VERSION = re.compile(r"^vault:v(\d+):")
ROTATION_ACTOR = "credctl rotate-key"


@dataclass
class RotationReport:
    """What a rotation did: how many ciphertexts it rewrapped, found current already, or skipped (and why)."""

    key_version: int = 0
    rewrapped: int = 0
    already_current: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = f"{self.rewrapped} rewrapped, {self.already_current} already current, {len(self.skipped)} skipped"
        return f"transit key at v{self.key_version}: {counts}"


def key_version_of(ciphertext: str) -> int:
    match = _KEY_VERSION.match(ciphertext)
    if not match:
        raise ValueError("not a transit ciphertext")
    return int(match.group(1))


async def rewrap_all(
    store: SecretStore,
    latest: int,
    *,
    batch_size: int = 100,
    on_total: Callable[[int], None] = lambda _: None,
    on_progress: Callable[[int], None] = lambda _: None,
) -> RotationReport:
    """Bring every live credential's current ciphertext to key version ``latest``."""
    report = RotationReport(key_version=latest)
    on_total(await rows.count_holding_secret(Status.revoked))
    after = uuid.UUID(int=0)
    run_id = uuid.uuid4().hex
    while True:
        batch = await rows.holding_secret_after(after, batch_size, Status.revoked)
        if not batch:
            return report
        after = batch[-1]["id"]
        ciphertexts = await asyncio.gather(*(_current_ciphertext(store, row, run_id) for row in batch))
        stale = []
        for row, ciphertext in zip(batch, ciphertexts, strict=True):
            if ciphertext is None:
                report.skipped.append(f"{row['id']}: no secret in Vault (see credctl reconcile)")
            elif key_version_of(ciphertext) >= latest:
                report.already_current += 1
            else:
                stale.append((row, ciphertext))
        if stale:
            rewrapped = await store.rewrap(
                _call(run_id, ANY_WORKSPACE),
                [(row["workspace_id"], str(row["id"]), ciphertext) for row, ciphertext in stale],
            )
            for (row, _), ciphertext in zip(stale, rewrapped, strict=True):
                if await _write_back(store, row, ciphertext, run_id):
                    report.rewrapped += 1
                else:
                    report.skipped.append(f"{row['id']}: changed during the run (its new version used the new key)")
        on_progress(len(batch))


def _call(run_id: str, workspace_id: str) -> CallContext:
    return CallContext(request_id=f"rotate-key-{run_id}", actor=ROTATION_ACTOR, workspace=workspace_id)


async def _current_ciphertext(store: SecretStore, row: dict[str, Any], run_id: str) -> str | None:
    try:
        return await store.read_ciphertext(_call(run_id, row["workspace_id"]), str(row["id"]), row["kv_version"])
    except SecretNotFound:
        return None


async def _write_back(store: SecretStore, row: dict[str, Any], ciphertext: str, run_id: str) -> bool:
    """Write the rewrapped ciphertext as the next version, if the credential did not change meanwhile."""
    call = _call(run_id, row["workspace_id"])
    async with database.transaction():
        current = await rows.locked_version(row["id"])
        if current is None or current[1] != row["kv_version"]:
            return False
        try:
            version = await store.write_ciphertext(call, str(row["id"]), ciphertext, expected_version=row["kv_version"])
        except VersionConflict:
            return False
        await rows.update(row["id"], {"kv_version": version})
        await versions.record(row["id"], version, ROTATION_ACTOR, "rewrap")
    return True
