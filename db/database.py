"""The Postgres connection: Piccolo's tables bound to a database chosen at run time, its pool, its transactions
and the migrations. Nothing here reads or writes the environment."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import itertools
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db import metrics, piccolo_conf
from db.tables import ApiKey, Credential, CredentialGrant, CredentialUsage, CredentialVersion

TABLES = (Credential, ApiKey, CredentialVersion, CredentialGrant, CredentialUsage, Migration)
POOL_CLOSE_TIMEOUT = 10.0
"""Seconds the pool waits at shutdown for connections still in use before it terminates them."""


def bind(database_url: str, connect_timeout: float = 60.0) -> PostgresEngine:
    """Make every table, and Piccolo's migration runner, use ``database_url``; returns the engine.

    Piccolo's engine checks the server version synchronously when it is built: call this off the event loop, after
    ``check_connection`` (Piccolo reports a failed check as a warning and "version 0.0", not as an error).
    """
    engine = PostgresEngine(config={"dsn": database_url, "timeout": connect_timeout}, log_queries=False)
    _use(engine)
    return engine


def _use(engine: PostgresEngine) -> None:
    # Piccolo's migration runner finds its engine in the module PICCOLO_CONF names, else in a module called
    # `piccolo_conf`: registering ours under that name reaches it without touching the environment.
    sys.modules.setdefault("piccolo_conf", piccolo_conf)
    piccolo_conf.DB = engine
    for table in TABLES:
        table._meta.db = engine


async def check_connection(database_url: str, connect_timeout: float) -> None:
    """Open one connection and close it: raises asyncpg's or the OS's error (``TimeoutError`` after
    ``connect_timeout`` seconds when the server accepts but never answers)."""
    connection = await asyncpg.connect(dsn=database_url, timeout=connect_timeout)
    await connection.close(timeout=connect_timeout)


@asynccontextmanager
async def connection_pool(
    database_url: str, *, min_size: int, max_size: int, connect_timeout: float = 60.0
) -> AsyncIterator[PostgresEngine]:
    """Bind to ``database_url`` with a connection pool; on exit, close it and restore the previous binding.

    Piccolo's tables hold one engine each, process-wide; restoring it lets a test run a second app against
    another database inside the first one's lifetime.
    """
    previous = piccolo_conf.DB
    await check_connection(database_url, connect_timeout)
    engine = await asyncio.to_thread(bind, database_url, connect_timeout)
    await engine.start_connection_pool(
        min_size=min_size, max_size=max_size, reset=_keep_session, init=metrics.instrument
    )
    try:
        yield engine
    finally:
        try:
            await asyncio.wait_for(engine.close_connection_pool(), POOL_CLOSE_TIMEOUT)
        except TimeoutError:
            # A connection a Postgres outage broke inside a transaction may never be released (Piccolo skips the
            # release when the rollback fails): close the rest rather than wait for it forever.
            if engine.pool is not None:
                engine.pool.terminate()
        _use(previous)


async def _keep_session(connection: object) -> None:
    """Skip asyncpg's reset query on every release (a round trip per query).

    The reset undoes session state: SET, LISTEN, session advisory locks, open cursors. This service creates none
    (its locks are row locks, released with their transaction), so there is nothing to undo.
    """


_PLACEHOLDER = re.compile(r"\{\}")


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """Piccolo's ``{}`` placeholders as asyncpg's ``$1, $2, ...`` (cached: the hot queries are few)."""
    counter = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def pooled() -> Any:
    """The bound pool when a statement now would run on a pooled connection of its own (no transaction is under
    way in this task); None otherwise. ``db.coalesce``'s reads share statements only then."""
    engine = piccolo_conf.DB
    if engine.current_transaction.get() is not None:
        return None
    return engine.pool


async def fetch(sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run a query written with Piccolo's ``{}`` placeholders straight on asyncpg: in the current transaction when
    there is one, else on a pooled connection (asyncpg keeps each connection's prepared statements).

    For the request path's hot queries: Piccolo's ``raw`` builds a QueryString per call, which cost ~150 µs of CPU
    per query against ~90 µs here.
    """
    engine = piccolo_conf.DB
    query = _numbered(sql)
    current = engine.current_transaction.get()
    if current is not None:
        records = await current.connection.fetch(query, *args)
    elif engine.pool is None:  # bound without a pool (a one-off script): Piccolo opens a connection
        return list(await engine.run_querystring(QueryString(sql, *args)))
    else:
        async with engine.pool.acquire() as connection:
            records = await connection.fetch(query, *args)
    return [dict(record) for record in records]


@asynccontextmanager
async def transaction() -> AsyncIterator[Any]:
    """A transaction on the bound database; the repositories' queries inside it join it.

    Piccolo's own context manager neither releases the connection nor leaves the transaction's context when the
    rollback (or the commit) raises, as it does when Postgres goes away mid-transaction: the connection was lost to
    the pool (and its shutdown then waited forever) and later queries of the same task kept using it. Here such a
    connection is terminated and handed back, and the context left, whatever happens.
    """
    engine = piccolo_conf.DB
    tx = engine.transaction()
    try:
        entered = await tx.__aenter__()
    except BaseException:
        await _abandon(engine, tx)
        raise
    try:
        yield entered
    except BaseException as exc:
        try:
            await tx.__aexit__(type(exc), exc, exc.__traceback__)
        except BaseException:
            await _abandon(engine, tx)
        raise
    try:
        await tx.__aexit__(None, None, None)
    except BaseException:
        await _abandon(engine, tx)
        raise


async def _abandon(engine: PostgresEngine, tx: Any) -> None:
    """Drop a top-level transaction whose connection is in an unknown state: terminate it, return it to the pool,
    and leave the transaction's context."""
    if getattr(tx, "_parent", None) is not None:
        return
    connection = getattr(tx, "connection", None)
    if connection is not None:
        connection.terminate()
        if engine.pool is not None:
            with contextlib.suppress(Exception):
                await engine.pool.release(connection)
    context = getattr(tx, "context", None)
    if context is not None:
        with contextlib.suppress(ValueError):
            engine.current_transaction.reset(context)


async def ping() -> None:
    """Raise unless the bound database answers a query."""
    await Credential.raw("SELECT 1")


async def migrate(database_url: str, connect_timeout: float = 60.0) -> str:
    """Apply every migration not yet applied to ``database_url`` (the previous binding is restored after); returns
    one line saying what was done.

    Piccolo's runner prints its own lines, among them "N migrations already complete" counting every migration
    there is (on a fresh database too): they are swallowed, and the summary counts from the migration table.
    """
    previous = piccolo_conf.DB
    await check_connection(database_url, connect_timeout)
    await asyncio.to_thread(bind, database_url, connect_timeout)
    try:
        manager = ForwardsMigrationManager(app_name="db")
        await manager.create_migration_table()
        before = set(await Migration.get_migrations_which_ran(app_name="db"))
        with contextlib.redirect_stdout(io.StringIO()):
            result = await manager.run()
        after = set(await Migration.get_migrations_which_ran(app_name="db"))
    finally:
        _use(previous)
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}")
    return migration_summary(len(after - before), len(before))


def migration_summary(applied: int, already: int) -> str:
    """The one line ``credctl migrate`` prints."""
    if not applied:
        return f"database up to date: {already} migration(s) already applied, none to apply"
    return f"applied {applied} migration(s)" + (f" ({already} already applied)" if already else "")
