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

from db import credentials as rows
from db import database
from db.credentials import State
from vault.store import ANY_WORKSPACE, WORKSPACES_PREFIX, CallContext, SecretStore

ACTOR = "reconcile"


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
    run = f"reconcile-{uuid.uuid4().hex}"

    def call(workspace_id: str) -> CallContext:
        return CallContext(request_id=run, actor=ACTOR, workspace=workspace_id)

    for row in await rows.stuck(cutoff):
        cid, wid = str(row["id"]), row["workspace_id"]
        report.actions.append(f"{verb}remove {row['state']} credential {cid} (workspace {wid}) and destroy its secret")
        if apply:
            await store.destroy(call(wid), cid)
            await rows.forget(row["id"])
        progress(cid)

    known = {str(row["id"]): row for row in await rows.every_row()}
    seen: set[str] = set()
    for folder in await store.list_keys(call(ANY_WORKSPACE), WORKSPACES_PREFIX):
        # Listed names come back as stored, i.e. percent-encoded by secret_path(); the store encodes again.
        workspace_id = unquote(folder.rstrip("/"))
        in_workspace = call(workspace_id)
        for cid in await store.list_keys(in_workspace, f"{WORKSPACES_PREFIX}/{folder}credentials"):
            seen.add(cid)
            progress(cid)
            metadata = await store.metadata(in_workspace, cid)
            if metadata is None:
                continue
            owner = known.get(cid)
            if owner is None:
                if _time(metadata["created_time"]) < cutoff and _is_uuid(cid):
                    report.actions.append(f"{verb}destroy orphaned secret {workspace_id}/{cid} (no database row)")
                    if apply:
                        await store.destroy(in_workspace, cid)
                continue
            if owner["state"] != State.active:
                continue
            unserved = _unserved_versions(metadata, owner["kv_version"], cutoff)
            if not unserved:
                continue
            report.actions.append(f"{verb}destroy unserved versions {unserved} of {cid}")
            if apply:
                await _destroy_unserved(store, in_workspace, cid, unserved)

    for cid, row in known.items():
        if row["state"] == State.active and row["kv_version"] > 0 and cid not in seen:
            report.problems.append(f"credential {cid} (workspace {row['workspace_id']}) has no secret in Vault")
    return report


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _unserved_versions(metadata: dict[str, Any], served: int, cutoff: datetime) -> list[int]:
    """KV versions above the one the row serves, older than the grace period, not yet destroyed."""
    versions = metadata.get("versions") or {}
    found = []
    for number in range(served + 1, int(metadata["current_version"]) + 1):
        version = versions.get(str(number)) or {}
        created = version.get("created_time")
        if version.get("destroyed") or not created:
            continue
        if _time(created) < cutoff:
            found.append(number)
    return found


async def _destroy_unserved(store: SecretStore, call: CallContext, cid: str, versions: list[int]) -> None:
    """Under the row lock the API's writers take, so an update committing one of these versions is not undercut."""
    async with database.transaction():
        locked = await rows.locked_version(uuid.UUID(cid))
        if locked is None or locked[0] is not State.active:
            return
        still_unserved = [v for v in versions if v > locked[1]]
        if still_unserved:
            await store.destroy_versions(call, cid, still_unserved)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
