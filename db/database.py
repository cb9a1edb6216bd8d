"""The Postgres connection: Piccolo's tables bound to a database chosen at run time, its pool, its transactions
and the migrations. Nothing here reads or writes the environment."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.postgres import PostgresEngine

from db import piccolo_conf
from db.tables import ApiKey, Credential, CredentialVersion

TABLES = (Credential, ApiKey, CredentialVersion, Migration)
POOL_CLOSE_TIMEOUT = 10.0
"""Seconds the pool waits at shutdown for connections still in use before it terminates them."""


def bind(database_url: str) -> PostgresEngine:
    """Make every table, and Piccolo's migration runner, use ``database_url``; returns the engine.

    Piccolo's engine checks the server version synchronously when it is built: call this off the event loop.
    """
    engine = PostgresEngine(config={"dsn": database_url}, log_queries=False)
    _use(engine)
    return engine


def _use(engine: PostgresEngine) -> None:
    # Piccolo's migration runner finds its engine in the module PICCOLO_CONF names, else in a module called
    # `piccolo_conf`: registering ours under that name reaches it without touching the environment.
    sys.modules.setdefault("piccolo_conf", piccolo_conf)
    piccolo_conf.DB = engine
    for table in TABLES:
        table._meta.db = engine


@asynccontextmanager
async def connection_pool(database_url: str, *, min_size: int, max_size: int) -> AsyncIterator[PostgresEngine]:
    """Bind to ``database_url`` with a connection pool; on exit, close it and restore the previous binding.

    Piccolo's tables hold one engine each, process-wide; restoring it lets a test run a second app against
    another database inside the first one's lifetime.
    """
    previous = piccolo_conf.DB
    engine = await asyncio.to_thread(bind, database_url)
    await engine.start_connection_pool(min_size=min_size, max_size=max_size, reset=_keep_session)
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


async def migrate(database_url: str) -> None:
    """Apply every migration not yet applied to ``database_url`` (the previous binding is restored after)."""
    previous = piccolo_conf.DB
    await asyncio.to_thread(bind, database_url)
    try:
        result = await run_forwards(app_name="db")
    finally:
        _use(previous)
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}")
