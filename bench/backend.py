"""The backend operations behind each endpoint, issued directly: the service's own repositories (``db/``) for
Postgres and its SecretStore (hvac in a bounded thread pool) for Vault. Used by the HTTP floor (bench/floor_app.py)
and the backend floor (bench/backend_floor.py), so both make exactly the service's round trips, with the same SQL
and the same clients; only the HTTP framework, authentication and the credential logic are left out.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from db import credentials as rows
from db import database
from db.credentials import CredentialFilter, State
from service.config import LifecycleSettings
from vault.secret import Secret
from vault.store import CallContext, SecretStore

WORKSPACE = "bench"
ACTOR = "00000000-0000-0000-0000-00000000beef"
EXACT_COUNT_LIMIT = LifecycleSettings().list_exact_count_limit  # the service's default: the same work
# What an API key without `admin` sees: the workspace's credentials of scope `workspace`, as the service asks.
VISIBLE = CredentialFilter(workspace_id=WORKSPACE, shared_scopes=("workspace",))
READ_FIELDS = (
    "label", "description", "auth_type", "credential_type", "credential_scope", "provider", "user_id", "id",
    "workspace_id", "created_by", "status", "expires_at", "last_used_at", "created_at", "updated_at",
)  # fmt: skip


def _read(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in READ_FIELDS}


def _now() -> datetime:
    return datetime.now(UTC)


def new_row(cid: uuid.UUID, label: str, at: datetime, *, description: str | None = None) -> dict[str, Any]:
    """Every column of a new credential row of the bench workspace (``db.credentials.COLUMNS``)."""
    return {
        "id": cid, "workspace_id": WORKSPACE, "label": label, "description": description, "auth_type": "api_key",
        "credential_type": None, "credential_scope": "workspace", "provider": "custom", "user_id": None,
        "created_by": ACTOR, "status": "active", "status_reason": None, "status_changed_at": None,
        "status_changed_by": None, "expires_at": None, "last_used_at": None, "created_at": at, "updated_at": at,
        "deleted_at": None, "state": State.pending, "kv_version": 0, "proxy": None,
    }  # fmt: skip


class NotFound(Exception):
    pass


class Backend:
    """The service's Postgres pool and one SecretStore, sized like the service's defaults (32 and 32)."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    @classmethod
    @contextlib.asynccontextmanager
    async def from_env(cls) -> AsyncIterator[Backend]:
        workers = int(os.environ.get("CREDENTIALS_VAULT_WORKERS", "32"))
        # fast_path=None: hvac in the thread pool for every call, as a plain service would (the floor stays fixed).
        store = SecretStore.connect(
            os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"], workers=workers, timeout=10, fast_path=None
        )
        try:
            async with database.connection_pool(
                os.environ["DATABASE_URL"],
                min_size=int(os.environ.get("CREDENTIALS_DB_POOL_MIN", "2")),
                max_size=int(os.environ.get("CREDENTIALS_DB_POOL_MAX", "32")),
            ):
                yield cls(store)
        finally:
            store.close()

    def ctx(self) -> CallContext:
        return CallContext(request_id=uuid.uuid4().hex, actor=ACTOR, workspace=WORKSPACE)

    # -- the operations ---------------------------------------------------------------------------------------

    async def _row(self, cid: str, *, lock: bool = False) -> dict[str, Any]:
        # coalesce=False: one statement per read, as a plain service makes (the service shares them under load).
        row = await rows.get(msgspec.structs.replace(VISIBLE, id=uuid.UUID(cid)), lock=lock, coalesce=False)
        if row is None:
            raise NotFound
        return row

    async def get(self, cid: str) -> dict[str, Any]:
        return _read(await self._row(cid))

    async def list(self, skip: int, limit: int, search: str | None = None) -> dict[str, Any]:
        found = msgspec.structs.replace(VISIBLE, search=search)
        page, total = await rows.page(found, skip=skip, limit=limit, exact_count_limit=EXACT_COUNT_LIMIT)
        return {"credentials": [_read(r) for r in page], "total": total, "page": skip // limit + 1, "size": limit}

    async def update(self, cid: str, label: str) -> dict[str, Any]:
        async with database.transaction():
            row = await self._row(cid, lock=True)
            changes = {"label": label, "updated_at": _now()}
            await rows.update(row["id"], changes)
        return _read({**row, **changes})

    async def reveal(self, cid: str) -> dict[str, Any]:
        row = await self._row(cid)
        plaintext = await self.store.read_unbatched(self.ctx(), cid, row["kv_version"])
        await rows.touch_last_used(row["id"], _now())
        return {
            "id": cid,
            "version": row["kv_version"],
            "auth_type": row["auth_type"],
            "credentials": msgspec.json.decode(plaintext.reveal()),
        }

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        plaintext = Secret(msgspec.json.encode(body["credentials"]))
        row = new_row(uuid.uuid4(), body["label"], _now(), description=body.get("description"))
        await rows.insert(row)
        # The plain service's way, kept fixed so that the ratio shows what batching and fewer round trips bought:
        # one unbatched transit call and one create-only KV write, each a blocking hvac call in the thread pool.
        ctx, cid = self.ctx(), str(row["id"])
        version = await self.store.write_ciphertext(
            ctx, cid, await self.store.encrypt_unbatched(ctx, cid, plaintext), 0
        )
        await rows.activate(row["id"], version, ACTOR)
        return _read(row)

    async def delete(self, cid: str) -> dict[str, Any]:
        # The service's delete is soft: the row is hidden at once and the purge destroys the secret later.
        if not await rows.hide(msgspec.structs.replace(VISIBLE, id=uuid.UUID(cid)), State.deleted, _now()):
            raise NotFound
        return {"id": cid, "deleted": True}
