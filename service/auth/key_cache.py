"""An in-process cache of API-key lookups, so that a request costs no Postgres query to authenticate.

What is cached per key is what the ``api_key`` row already holds: the SHA-256 of the key's secret part (never the
key or its secret: a cached entry cannot be replayed as a credential), the principal, status and expiry. Each
request still hashes the secret it presents and compares it in constant time with the cached hash.

Revocation reaches every instance through Postgres ``LISTEN/NOTIFY``: revoking a key notifies its lookup id in
the same transaction (a trigger on ``api_key``), and each instance's listener evicts it (measured: milliseconds).
While the listening connection is down the cache is emptied and bypassed (every request queries Postgres), so a
revocation is never missed; entries also expire after ``TTL`` seconds as a last safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from db import api_keys

log = logging.getLogger("service.auth")

TTL = 60.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class CachedKey:
    row: dict[str, Any]
    """The ``api_key`` row (its ``secret_hash`` is a SHA-256, as stored in Postgres)."""
    until: float


class KeyCache:
    """Lookup id -> the key's row; only serves while the invalidation listener is connected."""

    def __init__(self, *, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, CachedKey] = OrderedDict()
        self._ttl = ttl
        self._max = max_entries
        self.listening = False

    def get(self, lookup_id: str) -> dict[str, Any] | None:
        if not self.listening:
            return None
        entry = self._entries.get(lookup_id)
        if entry is None:
            return None
        if entry.until < time.monotonic():
            self._entries.pop(lookup_id, None)
            return None
        return entry.row

    def put(self, lookup_id: str, row: dict[str, Any]) -> None:
        if not self.listening:
            return
        self._entries[lookup_id] = CachedKey(row, time.monotonic() + self._ttl)
        self._entries.move_to_end(lookup_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def evict(self, lookup_id: str) -> None:
        self._entries.pop(lookup_id, None)

    def clear(self) -> None:
        self._entries.clear()

    async def lookup(self, lookup_id: str) -> dict[str, Any] | None:
        """The key's row, from the cache or from Postgres (then cached). Unknown keys are not cached."""
        row = self.get(lookup_id)
        if row is None:
            row = await api_keys.by_lookup(lookup_id)
            if row is not None:
                self.put(lookup_id, row)
        return row

    # -- the listener -------------------------------------------------------------------------------------------

    def _changed(self, lookup_id: str) -> None:
        self.evict(lookup_id)

    def _lost(self) -> None:
        self.listening = False
        self.clear()

    async def listen(self, database_url: str, *, retry: float = 1.0) -> None:
        """Keep a listening connection; runs until cancelled. The cache serves only while it is connected."""
        while True:
            closed = asyncio.Event()

            def lost(closed: asyncio.Event = closed) -> None:
                self._lost()
                closed.set()

            try:
                async with api_keys.changes(database_url, self._changed, lost):
                    self.clear()  # whatever was revoked while nobody listened is forgotten
                    self.listening = True
                    await closed.wait()
            except (TimeoutError, OSError) as exc:
                log.warning("API-key cache: listening for revocations failed (%s); caching off", type(exc).__name__)
            except Exception as exc:  # asyncpg's errors: the cache stays off, requests query Postgres
                log.warning("API-key cache: listening for revocations failed (%s); caching off", type(exc).__name__)
            self._lost()
            await asyncio.sleep(retry)


@contextlib.asynccontextmanager
async def running(database_url: str) -> AsyncIterator[KeyCache]:
    """A cache and its listener for the app's lifetime."""
    cache = KeyCache()
    task = asyncio.create_task(cache.listen(database_url), name="api-key-cache-listener")
    try:
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
