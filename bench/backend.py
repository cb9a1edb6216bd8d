"""The backend operations behind each endpoint, issued directly: asyncpg for the SQL, the service's own
SecretStore (hvac in a bounded thread pool) for Vault. Used by the HTTP floor (bench/floor_app.py) and the
backend floor (bench/backend_floor.py), so both perform exactly the same round trips.

The SQL is what Piccolo emits for the service's queries (same WHERE clauses, ORDER BY, LIMIT/OFFSET, COUNT,
row lock for update); only Piccolo's query building and row conversion are left out.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from vault.secret import Secret
from vault.store import CallContext, SecretStore

WORKSPACE = "bench"
ACTOR = "00000000-0000-0000-0000-00000000beef"
READ_FIELDS = (
    "label", "description", "auth_type", "credential_type", "credential_scope", "provider", "user_id", "id",
    "workspace_id", "created_by", "status", "expires_at", "last_used_at", "created_at", "updated_at",
)  # fmt: skip
COLS = ", ".join(f'"credential"."{name}"' for name in READ_FIELDS)
VISIBLE = '"credential"."workspace_id" = $1 AND "credential"."state" = \'active\''

SQL_GET = f'SELECT {COLS} FROM "credential" WHERE {VISIBLE} AND "credential"."id" = $2 LIMIT 1'
SQL_LIST = (
    f'SELECT {COLS} FROM "credential" WHERE {VISIBLE} '
    'ORDER BY "credential"."created_at" DESC, "credential"."id" DESC LIMIT $2 OFFSET $3'
)
# The service's total: exact up to 10,000 matches, the planner's estimate beyond (db/queries.py).
EXACT_COUNT_LIMIT = 10_000
SQL_COUNT = f'SELECT COUNT(*) FROM (SELECT 1 FROM "credential" WHERE {VISIBLE} LIMIT {EXACT_COUNT_LIMIT + 1}) AS capped'
SQL_ESTIMATE = f'EXPLAIN (FORMAT JSON) SELECT 1 FROM "credential" WHERE {VISIBLE}'
SEARCH = '("credential"."label" ILIKE $2 OR "credential"."description" ILIKE $2)'
SQL_SEARCH = (
    f'SELECT {COLS} FROM "credential" WHERE {VISIBLE} AND {SEARCH} '
    'ORDER BY "credential"."created_at" DESC, "credential"."id" DESC LIMIT $3 OFFSET $4'
)
SQL_SEARCH_COUNT = (
    f'SELECT COUNT(*) FROM (SELECT 1 FROM "credential" WHERE {VISIBLE} AND {SEARCH} LIMIT {EXACT_COUNT_LIMIT + 1}) AS c'
)
SQL_SEARCH_ESTIMATE = f'EXPLAIN (FORMAT JSON) SELECT 1 FROM "credential" WHERE {VISIBLE} AND {SEARCH}'
SQL_LOCK = f'SELECT {COLS}, "credential"."kv_version" FROM "credential" WHERE {VISIBLE} AND "credential"."id" = $2 LIMIT 1 FOR UPDATE'
SQL_UPDATE = 'UPDATE "credential" SET "label" = $1, "updated_at" = $2 WHERE "credential"."id" = $3'
SQL_REVEAL_ROW = f'SELECT "credential"."auth_type", "credential"."kv_version" FROM "credential" WHERE {VISIBLE} AND "credential"."id" = $2 LIMIT 1'
SQL_TOUCH = 'UPDATE "credential" SET "last_used_at" = $1 WHERE "credential"."id" = $2'
INSERT_COLUMNS = (
    "id", "workspace_id", "label", "description", "auth_type", "credential_type", "credential_scope", "provider",
    "user_id", "created_by", "status", "expires_at", "last_used_at", "created_at", "updated_at", "state", "kv_version",
)  # fmt: skip
SQL_INSERT = (
    f'INSERT INTO "credential" ({", ".join(INSERT_COLUMNS)}) VALUES '
    f'({", ".join(f"${i + 1}" for i in range(len(INSERT_COLUMNS)))}) RETURNING "id"'
)
SQL_ACTIVATE = 'UPDATE "credential" SET "state" = \'active\', "kv_version" = $1 WHERE "credential"."id" = $2'
# The service's delete is soft (issue 6): the row is hidden at once and the purge destroys the secret later.
SQL_HIDE = (
    'UPDATE "credential" SET "state" = \'deleted\', "deleted_at" = $3, "updated_at" = $3 '
    f'WHERE {VISIBLE} AND "credential"."id" = $2 RETURNING "credential"."id"'
)


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {name: record[name] for name in READ_FIELDS}


def _now() -> datetime:
    return datetime.now(UTC)


class NotFound(Exception):
    pass


class Backend:
    """One asyncpg pool and one SecretStore, sized like the service's defaults (32 and 32)."""

    def __init__(self, pool: asyncpg.Pool, store: SecretStore) -> None:
        self.pool = pool
        self.store = store

    @classmethod
    async def from_env(cls) -> Backend:
        workers = int(os.environ.get("CREDENTIALS_VAULT_WORKERS", "32"))
        pool = await asyncpg.create_pool(
            os.environ["DATABASE_URL"],
            min_size=int(os.environ.get("CREDENTIALS_DB_POOL_MIN", "2")),
            max_size=int(os.environ.get("CREDENTIALS_DB_POOL_MAX", "32")),
        )
        store = SecretStore.connect(os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"], workers=workers, timeout=10)
        return cls(pool, store)

    @classmethod
    async def from_env_values(cls, database_url: str, vault_addr: str, vault_token: str) -> Backend:
        os.environ.update(DATABASE_URL=database_url, VAULT_ADDR=vault_addr, VAULT_TOKEN=vault_token)
        return await cls.from_env()

    async def close(self) -> None:
        await self.pool.close()
        self.store.close()

    def ctx(self) -> CallContext:
        return CallContext(request_id=uuid.uuid4().hex, actor=ACTOR, workspace=WORKSPACE)

    # -- the operations ---------------------------------------------------------------------------------------

    async def get(self, cid: str) -> dict[str, Any]:
        record = await self.pool.fetchrow(SQL_GET, WORKSPACE, uuid.UUID(cid))
        if record is None:
            raise NotFound
        return _row(record)

    async def list(self, skip: int, limit: int, search: str | None = None) -> dict[str, Any]:
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = await self.pool.fetch(SQL_SEARCH, WORKSPACE, pattern, limit, skip)
            total = await self.pool.fetchval(SQL_SEARCH_COUNT, WORKSPACE, pattern)
            if total > EXACT_COUNT_LIMIT:
                total = await self._estimate(SQL_SEARCH_ESTIMATE, WORKSPACE, pattern)
        else:
            rows = await self.pool.fetch(SQL_LIST, WORKSPACE, limit, skip)
            total = await self.pool.fetchval(SQL_COUNT, WORKSPACE)
            if total > EXACT_COUNT_LIMIT:
                total = await self._estimate(SQL_ESTIMATE, WORKSPACE)
        return {"credentials": [_row(r) for r in rows], "total": total, "page": skip // limit + 1, "size": limit}

    async def _estimate(self, sql: str, *args: Any) -> int:
        plan = await self.pool.fetchval(sql, *args)
        plan = msgspec.json.decode(plan) if isinstance(plan, str | bytes) else plan
        return max(int(plan[0]["Plan"]["Plan Rows"]), EXACT_COUNT_LIMIT + 1)

    async def update(self, cid: str, label: str) -> dict[str, Any]:
        key = uuid.UUID(cid)
        async with self.pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(SQL_LOCK, WORKSPACE, key)
            if record is None:
                raise NotFound
            now = _now()
            await conn.execute(SQL_UPDATE, label, now, key)
        row = _row(record)
        row.update(label=label, updated_at=now)
        return row

    async def reveal(self, cid: str) -> dict[str, Any]:
        key = uuid.UUID(cid)
        record = await self.pool.fetchrow(SQL_REVEAL_ROW, WORKSPACE, key)
        if record is None:
            raise NotFound
        plaintext = await self.store.read(self.ctx(), cid, record["kv_version"])
        await self.pool.execute(SQL_TOUCH, _now(), key)
        return {
            "id": cid,
            "version": record["kv_version"],
            "auth_type": record["auth_type"],
            "credentials": msgspec.json.decode(plaintext.reveal()),
        }

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        plaintext = Secret(msgspec.json.encode(body["credentials"]))
        cid = uuid.uuid4()
        now = _now()
        row = {
            "id": cid, "workspace_id": WORKSPACE, "label": body["label"], "description": body.get("description"),
            "auth_type": body["auth_type"], "credential_type": body.get("credential_type"),
            "credential_scope": body["credential_scope"], "provider": body.get("provider") or "custom",
            "user_id": body.get("user_id"), "created_by": ACTOR, "status": "active", "expires_at": None,
            "last_used_at": None, "created_at": now, "updated_at": now, "state": "pending", "kv_version": 0,
        }  # fmt: skip
        await self.pool.fetchval(SQL_INSERT, *(row[c] for c in INSERT_COLUMNS))
        ctx = self.ctx()
        stored = await self.store.create(
            ctx,
            str(cid),
            plaintext,
            custom_metadata={
                "workspace_id": WORKSPACE, "credential_id": str(cid), "created_by": ACTOR,
                "auth_type": body["auth_type"], "request_id": ctx.request_id,
            },
        )  # fmt: skip
        await self.pool.execute(SQL_ACTIVATE, stored.version, cid)
        row["state"] = "active"
        return {name: row[name] for name in READ_FIELDS}

    async def delete(self, cid: str) -> dict[str, Any]:
        key = uuid.UUID(cid)
        hidden = await self.pool.fetch(SQL_HIDE, WORKSPACE, key, _now())
        if not hidden:
            raise NotFound
        return {"id": cid, "deleted": True}
