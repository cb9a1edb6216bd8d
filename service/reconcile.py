"""``credctl reconcile``: repair what a crash between a Postgres write and a Vault write left behind.

What it looks for (each older than a grace period, so writes in flight are left alone):
- ``pending`` rows: a create that never finished. Its secret (if any) is destroyed and the row removed.
- ``deleting`` rows: a delete or purge that never finished. The secret is destroyed and the row removed.
  (``deleted`` rows are soft-deleted and restorable: the purge, not the reconciler, ends them.)
- KV entries with no row: a create whose row is gone. The entry is destroyed.
- KV entries ahead of their row: an update that wrote Vault but not Postgres. The unserved versions are destroyed.
- ``active`` rows whose secret is missing from KV are reported (there is nothing to restore them from).
Dry run by default: it prints what it would do; ``apply=True`` does it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from db import queries
from db.tables import Credential
from vault.store import WORKSPACES_PREFIX, CallContext, SecretStore


@dataclass
class Report:
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def reconcile(
    store: SecretStore,
    *,
    apply: bool,
    grace: timedelta = timedelta(minutes=5),
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    report = Report()
    cutoff = datetime.now(UTC) - grace
    verb = "" if apply else "would "

    # Soft-deleted ('deleted') rows are restorable until the purge ends them: never the reconciler's.
    stuck = await Credential.select(Credential.id, Credential.workspace_id, Credential.state).where(
        Credential.state.is_in(["pending", "deleting"]) & (Credential.updated_at < cutoff)
    )
    for row in stuck:
        cid, wid = str(row["id"]), row["workspace_id"]
        report.actions.append(f"{verb}remove {row['state']} credential {cid} (workspace {wid}) and destroy its secret")
        if apply:
            await store.destroy(None, wid, cid)
            await queries.forget_credential(row["id"])
        progress(cid)

    rows = {
        str(row["id"]): row
        for row in await Credential.select(
            Credential.id, Credential.workspace_id, Credential.state, Credential.kv_version, Credential.updated_at
        )
    }
    seen: set[str] = set()
    for folder in await store.list_keys(WORKSPACES_PREFIX):
        # Listed names come back as stored, i.e. percent-encoded by secret_path(); the store encodes again.
        workspace_id = unquote(folder.rstrip("/"))
        for cid in await store.list_keys(f"{WORKSPACES_PREFIX}/{folder}credentials"):
            seen.add(cid)
            progress(cid)
            metadata = await store.metadata(workspace_id, cid)
            if metadata is None:
                continue
            created = datetime.fromisoformat(str(metadata["created_time"]).replace("Z", "+00:00"))
            owner = rows.get(cid)
            if owner is None:
                if created < cutoff and _is_uuid(cid):
                    report.actions.append(f"{verb}destroy orphaned secret {workspace_id}/{cid} (no database row)")
                    if apply:
                        await store.destroy(None, workspace_id, cid)
                continue
            if owner["state"] != "active":
                continue
            unserved = _unserved_versions(metadata, owner["kv_version"], cutoff)
            if not unserved:
                continue
            report.actions.append(f"{verb}destroy unserved versions {unserved} of {cid}")
            if apply:
                await _destroy_unserved(store, workspace_id, cid, unserved)

    for cid, row in rows.items():
        if row["state"] == "active" and row["kv_version"] > 0 and cid not in seen:
            report.problems.append(f"credential {cid} (workspace {row['workspace_id']}) has no secret in Vault")
    return report


def _unserved_versions(metadata: dict[str, Any], served: int, cutoff: datetime) -> list[int]:
    """KV versions above the one the row serves, older than the grace period, not yet destroyed."""
    versions = metadata.get("versions") or {}
    found = []
    for number in range(served + 1, int(metadata["current_version"]) + 1):
        version = versions.get(str(number)) or {}
        created = version.get("created_time")
        if version.get("destroyed") or not created:
            continue
        if datetime.fromisoformat(str(created).replace("Z", "+00:00")) < cutoff:
            found.append(number)
    return found


async def _destroy_unserved(store: SecretStore, workspace_id: str, cid: str, versions: list[int]) -> None:
    """Under the row lock the API's writers take, so an update committing one of these versions is not undercut."""
    async with Credential._meta.db.transaction():
        row = await queries.credential(queries.Where().add("id = {}", uuid.UUID(cid)), lock=True)
        if row is None or row["state"] != "active":
            return
        still_unserved = [v for v in versions if v > row["kv_version"]]
        if still_unserved:
            ctx = CallContext(request_id=f"reconcile-{uuid.uuid4().hex}", actor="reconcile", workspace=workspace_id)
            await store.destroy_versions(ctx, cid, still_unserved)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
