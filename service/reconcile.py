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

from db.tables import Credential, CredentialVersion
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

    stuck = await Credential.select(Credential.id, Credential.workspace_id, Credential.state).where(
        (Credential.state != "active") & (Credential.updated_at < cutoff)
    )
    for row in stuck:
        cid, wid = str(row["id"]), row["workspace_id"]
        report.actions.append(f"{verb}remove {row['state']} credential {cid} (workspace {wid}) and destroy its secret")
        if apply:
            await store.destroy(None, wid, cid)
            await CredentialVersion.delete().where(CredentialVersion.credential_id == row["id"])
            await Credential.delete().where(Credential.id == row["id"])
        progress(cid)

    rows = {
        str(row["id"]): row
        for row in await Credential.select(
            Credential.id, Credential.workspace_id, Credential.state, Credential.kv_version, Credential.updated_at
        )
    }
    seen: set[str] = set()
    for folder in await store.list_keys(WORKSPACES_PREFIX):
        workspace_id = folder.rstrip("/")
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
            row = owner
            current = int(metadata["current_version"])
            known = metadata.get("versions") or {}
            versions = [
                v
                for v in range(row["kv_version"] + 1, current + 1)
                if not known.get(str(v), {}).get("destroyed", False)
            ]
            if row["state"] == "active" and versions and row["updated_at"] < cutoff:
                report.actions.append(f"{verb}destroy unserved versions {versions} of {cid}")
                if apply:
                    ctx = CallContext(
                        request_id=f"reconcile-{uuid.uuid4().hex}", actor="reconcile", workspace=workspace_id
                    )
                    await store.destroy_versions(ctx, cid, versions)

    for cid, row in rows.items():
        if row["state"] == "active" and row["kv_version"] > 0 and cid not in seen:
            report.problems.append(f"credential {cid} (workspace {row['workspace_id']}) has no secret in Vault")
    return report


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
