"""The usage record of a credential: written off the response path in batches, paged through by
``GET /api/v1/credentials/{id}/usage``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from db import usage
from service.context import RequestContext
from service.credentials.service import CredentialService
from service.grants.schemas import UsageList, UsageRead

log = logging.getLogger("service.proxy")


class UsageWriter:
    """Usage records leave the request at once: a bounded in-process queue, which a background task writes in
    batches (one statement for up to ``batch`` records, instead of one round trip per call). When the queue is full
    a call waits for room (records are never dropped for speed); on shutdown everything queued is written. A batch
    that fails (a credential purged meanwhile) is written record by record, so one bad record loses only itself."""

    def __init__(self, capacity: int = 10_000, batch: int = 500) -> None:
        self._queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(capacity)
        self._batch = batch

    async def put(self, values: Mapping[str, Any]) -> None:
        await self._queue.put(values)

    async def flush(self) -> None:
        """Until every record queued so far is written (or given up): a listing then shows this instance's calls."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await _write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()


async def _write(batch: list[Mapping[str, Any]]) -> None:
    try:
        await usage.record_many(batch)
        return
    except Exception as exc:
        if len(batch) == 1:
            log.warning("usage not recorded for credential %s (%s)", batch[0]["credential_id"], type(exc).__name__)
            return
    for values in batch:
        await _write([values])


@asynccontextmanager
async def usage_writer() -> AsyncIterator[UsageWriter]:
    """The writer and its task for the service's lifetime; what is queued at the end is written before it closes."""
    writer = UsageWriter()
    task = asyncio.create_task(writer.run(), name="usage-writer")
    try:
        yield writer
    finally:
        with contextlib.suppress(Exception):
            await writer.flush()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def page(
    credentials: CredentialService,
    writer: UsageWriter,
    ctx: RequestContext,
    credential_id: str,
    skip: int,
    limit: int,
) -> UsageList:
    credential = await credentials.get(ctx, credential_id)
    await writer.flush()
    rows, total = await usage.page(credential.id, skip=skip, limit=limit)
    return UsageList(
        usage=[
            UsageRead(
                **{name: row[name] for name in UsageRead.__struct_fields__ if name not in {"id", "grant_id"}},
                id=str(row["id"]),
                grant_id=None if row["grant_id"] is None else str(row["grant_id"]),
            )
            for row in rows
        ],
        total=total,
        page=skip // limit + 1,
        size=limit,
    )
