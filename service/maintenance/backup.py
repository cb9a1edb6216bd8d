"""``credctl backup`` and ``credctl restore``: the Postgres metadata and the OpenBao raft storage as one pair.

Order makes the pair consistent. The database is dumped first, then OpenBao is snapshotted: a credential becomes
visible in Postgres only after its secret is in Vault, so every visible row in the dump has its secret in the
later snapshot. Writes between the two leave at most secrets without a visible row (a create that had not
finished), which ``credctl reconcile`` sweeps after a restore. Secrets are destroyed only by purge, after the
retention window, so none that a dumped row needs is gone from the snapshot.

A manifest names both files with their sizes and SHA-256 checksums; restore checks them before touching anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from db import dump
from vault import snapshot

MANIFEST = "manifest.json"
DATABASE_FILE = "postgres.dump"
VAULT_FILE = "openbao.snap"
FORMAT = 1


class BackupError(Exception):
    """A backup or restore cannot be made or used (the message says why and what to do)."""


@dataclass(frozen=True)
class Report:
    """What a backup or restore did, for its one-line summary."""

    directory: Path
    sizes: dict[str, int]
    rows: dict[str, int]
    seconds: float
    sealed: bool = False
    """After a restore: OpenBao waits for the backed-up cluster's unseal keys."""

    def summary(self, verb: str) -> str:
        files = ", ".join(f"{name} {size:,} B" for name, size in self.sizes.items())
        rows = ", ".join(f"{count} {table}" for table, count in self.rows.items())
        return f"{verb} {self.directory}: {files}; rows: {rows}; {self.seconds:.1f} s"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backup(
    directory: Path, *, database_url: str, vault_addr: str, vault_token: str, vault_cacert: str | None = None
) -> Report:
    """Write ``postgres.dump``, then ``openbao.snap``, then ``manifest.json`` into ``directory`` (new or empty)."""
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty; back up into a new directory")
    try:
        rows = asyncio.run(dump.row_counts(database_url))
        dump.dump(database_url, directory / DATABASE_FILE)
        snapshot.save(vault_addr, vault_token, directory / VAULT_FILE, cacert=vault_cacert)
    except (dump.DumpError, snapshot.SnapshotError, OSError) as exc:
        raise BackupError(str(exc)) from None
    files = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": _sha256(directory / name)}
        for name in (DATABASE_FILE, VAULT_FILE)
    }
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "order": [DATABASE_FILE, VAULT_FILE],
        "files": files,
        "rows": rows,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    sizes = {name: int(info["bytes"]) for name, info in files.items()}  # type: ignore[call-overload]
    return Report(directory, sizes, rows, time.monotonic() - started)


def verify(directory: Path) -> dict[str, object]:
    """The manifest, once every file it names has its size and checksum; ``BackupError`` naming the first that
    does not."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{directory / MANIFEST} cannot be read: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{directory / MANIFEST}: unknown format {manifest.get('format')!r}")
    for name, info in manifest["files"].items():
        path = directory / name
        if not path.exists():
            raise BackupError(f"{path} is missing")
        if path.stat().st_size != info["bytes"] or _sha256(path) != info["sha256"]:
            raise BackupError(f"{path} does not match its checksum in the manifest: the backup is damaged")
    return dict(manifest)


def restore(
    directory: Path, *, database_url: str, vault_addr: str, vault_token: str, vault_cacert: str | None = None
) -> Report:
    """Restore a backup into an empty stack: the dump into a database without tables, the snapshot into OpenBao.

    Checked first (manifest, checksums, an empty database), so a refused restore changes nothing. The snapshot is
    restored with ``snapshot-force``: afterwards OpenBao answers to the backed-up cluster's unseal keys and tokens.
    """
    started = time.monotonic()
    manifest = verify(directory)
    try:
        tables = asyncio.run(dump.table_names(database_url))
    except dump.DumpError as exc:
        raise BackupError(str(exc)) from None
    if tables:
        raise BackupError(
            f"the database already has tables ({', '.join(tables[:3])}...): restore into a new, empty database"
        )
    try:
        dump.restore(database_url, directory / DATABASE_FILE)
        snapshot.restore(vault_addr, vault_token, directory / VAULT_FILE, force=True, cacert=vault_cacert)
        rows = asyncio.run(dump.row_counts(database_url))
        sealed = snapshot.sealed_after_restore(vault_addr, cacert=vault_cacert)
    except (dump.DumpError, snapshot.SnapshotError, OSError) as exc:
        raise BackupError(str(exc)) from None
    if rows != manifest["rows"]:
        raise BackupError(f"restored rows {rows} differ from the manifest's {manifest['rows']}")
    files = manifest["files"]
    sizes = {name: int(info["bytes"]) for name, info in files.items()}  # type: ignore[attr-defined]
    return Report(directory, sizes, rows, time.monotonic() - started, sealed=sealed)
