"""Prometheus metrics of the calls to Postgres (latency and errors by operation) and of the connection pool, and
OpenTelemetry spans for them when the optional ``opentelemetry-api`` is installed.

asyncpg reports each query to a query logger once it is done (``Connection.add_query_logger``); every pooled
connection gets ``observe`` as one (``instrument``). The operation label is the statement's verb and first table
(``SELECT credential``): never a value, a parameter or an id.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from db import piccolo_conf

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the extra is not installed
    _trace = None  # type: ignore[assignment]

DB_QUERY_SECONDS = Histogram(
    "credentials_db_query_duration_seconds",
    "Duration of one Postgres statement, by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DB_QUERY_ERRORS = Counter(
    "credentials_db_query_errors_total",
    "Postgres statements that failed, by operation and error",
    ["operation", "error"],
)
DB_BATCH_SIZE = Histogram(
    "credentials_db_batch_size",
    "Gets or deletes answered by one shared statement (db.coalesce), by kind",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
DB_POOL_CONNECTIONS = Gauge(
    "credentials_db_pool_connections", "Postgres pool connections, by state (max: the pool's size limit)", ["state"]
)
DB_POOL_CONNECTIONS.labels("open").set_function(lambda: _pool_stat("get_size"))
DB_POOL_CONNECTIONS.labels("idle").set_function(lambda: _pool_stat("get_idle_size"))
DB_POOL_CONNECTIONS.labels("max").set_function(lambda: _pool_stat("get_max_size"))

_VERB = re.compile(r"^\s*(\w+)")
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|TABLE)\s+"?(\w+)', re.IGNORECASE)
_tracer = _trace.get_tracer("credentials.db") if _trace is not None else None


def _pool_stat(name: str) -> float:
    pool = getattr(piccolo_conf.DB, "pool", None)
    return float(getattr(pool, name)()) if pool is not None else 0.0


@functools.lru_cache(maxsize=512)
def operation(query: str) -> str:
    verb = _VERB.match(query)
    if not verb:
        return "other"
    table = _TABLE.search(query)
    return f"{verb.group(1).upper()} {table.group(1).lower()}" if table else verb.group(1).upper()


@functools.lru_cache(maxsize=512)
def _timer(op: str) -> Any:
    """The operation's labelled histogram, looked up once (``labels()`` takes a lock and builds a key per call)."""
    return DB_QUERY_SECONDS.labels(op)


def observe(record: Any) -> None:
    """asyncpg's query logger: one ``LoggedQuery`` per statement (its text, elapsed seconds, exception)."""
    op = operation(record.query)
    _timer(op).observe(record.elapsed)
    if record.exception is not None:
        DB_QUERY_ERRORS.labels(op, type(record.exception).__name__).inc()
    if _tracer is not None and _trace is not None and _trace.get_current_span().is_recording():
        # The statement is over: a span with its real start and end, under the request's span.
        end = time.time_ns()
        span = _tracer.start_span(
            f"postgres {op}",
            kind=_trace.SpanKind.CLIENT,
            start_time=end - int(record.elapsed * 1e9),
            attributes={"db.system": "postgresql", "db.operation": op},
        )
        span.end(end_time=end)


@functools.lru_cache(maxsize=16)
def _batch_sizes(kind: str) -> Any:
    return DB_BATCH_SIZE.labels(kind)


def observe_batch(kind: str, size: int) -> None:
    """How many items (gets, deletes) one statement answered."""
    _batch_sizes(kind).observe(size)


async def instrument(connection: Any) -> None:
    """The pool's ``init``: report this connection's statements to ``observe``."""
    connection.add_query_logger(observe)
