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

from db.tables import Credential, CredentialVersion
from vault.errors import SecretNotFound, VersionConflict
from vault.store import CallContext, SecretStore

_KEY_VERSION = re.compile(r"^vault:v(\d+):")
ROTATION_ACTOR = "credctl rotate-key"


@dataclass
class RotationReport:
    key_version: int = 0
    rewrapped: int = 0
    already_current: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"transit key at v{self.key_version}: {self.rewrapped} rewrapped, {self.already_current} already current, "
            f"{len(self.skipped)} skipped"
        )


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
    live = (
        (Credential.state.is_in(["active", "deleted"])) & (Credential.status != "revoked") & (Credential.kv_version > 0)
    )
    on_total(await Credential.count().where(live))
    after = uuid.UUID(int=0)
    run_id = uuid.uuid4().hex
    while True:
        rows = await (
            Credential.select(Credential.id, Credential.workspace_id, Credential.kv_version)
            .where(live & (Credential.id > after))
            .order_by(Credential.id)
            .limit(batch_size)
        )
        if not rows:
            return report
        after = rows[-1]["id"]
        ciphertexts = await asyncio.gather(*(_current_ciphertext(store, row) for row in rows))
        stale = []
        for row, ciphertext in zip(rows, ciphertexts, strict=True):
            if ciphertext is None:
                report.skipped.append(f"{row['id']}: no secret in Vault (see credctl reconcile)")
            elif key_version_of(ciphertext) >= latest:
                report.already_current += 1
            else:
                stale.append((row, ciphertext))
        if stale:
            rewrapped = await store.rewrap(
                None, [(row["workspace_id"], str(row["id"]), ciphertext) for row, ciphertext in stale]
            )
            for (row, _), ciphertext in zip(stale, rewrapped, strict=True):
                if await _write_back(store, row, ciphertext, run_id):
                    report.rewrapped += 1
                else:
                    report.skipped.append(f"{row['id']}: changed during the run (its new version used the new key)")
        on_progress(len(rows))


async def _current_ciphertext(store: SecretStore, row: dict[str, Any]) -> str | None:
    ctx = CallContext(request_id="rotate-key", actor=ROTATION_ACTOR, workspace=row["workspace_id"])
    try:
        return await store.read_ciphertext(ctx, str(row["id"]), row["kv_version"])
    except SecretNotFound:
        return None


async def _write_back(store: SecretStore, row: dict[str, Any], ciphertext: str, run_id: str) -> bool:
    """Write the rewrapped ciphertext as the next version, if the credential did not change meanwhile."""
    ctx = CallContext(request_id=f"rotate-key-{run_id}", actor=ROTATION_ACTOR, workspace=row["workspace_id"])
    async with Credential._meta.db.transaction():
        current = await Credential.select(Credential.kv_version).where(Credential.id == row["id"]).lock_rows().first()
        if current is None or current["kv_version"] != row["kv_version"]:
            return False
        try:
            version = await store.write_ciphertext(ctx, str(row["id"]), ciphertext, expected_version=row["kv_version"])
        except VersionConflict:
            return False
        await Credential.update({Credential.kv_version: version}).where(Credential.id == row["id"])
        await CredentialVersion.insert(
            CredentialVersion(credential_id=row["id"], version=version, created_by=ROTATION_ACTOR, reason="rewrap")
        )
    return True
