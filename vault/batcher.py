"""A micro-batcher for transit: concurrent requests' encrypts (and decrypts) share one ``batch_input`` call.

The first item of a batch opens a window of ``max_wait`` seconds; the batch is sent when the window closes or
when it holds ``max_size`` items, whichever comes first, so no item waits longer than ``max_wait`` for its call
to start. Each item keeps its own derivation context (its workspace and credential); the call carries the
audited headers of every request it serves; an item's error (a wrong context, say) is raised in the request
that item belongs to, and a failure of the whole call is raised in every request of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vault.errors import VaultError, VaultRequestRejected

Caller = tuple[str, str, str]
"""request id, actor, workspace: the audited headers of one API request."""

Send = Callable[[list[dict[str, str]], list[Caller]], Awaitable[list[dict[str, Any]]]]
"""Sends one batch (its items and who each serves) and returns ``batch_results`` in the same order."""


@dataclass(slots=True)
class _Batch:
    items: list[dict[str, str]] = field(default_factory=list)
    callers: list[Caller] = field(default_factory=list)
    futures: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Collects items for one transit operation (``send`` makes the call) and hands each its own result."""

    def __init__(self, send: Send, *, max_wait: float, max_size: int) -> None:
        self._send = send
        self._max_wait = max_wait
        self._max_size = max_size
        self._open: _Batch | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, caller: Caller, item: dict[str, str]) -> dict[str, Any]:
        """This item's entry of ``batch_results`` once its batch has been answered; raises its own error."""
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            batch.timer = loop.call_later(self._max_wait, self._flush, batch)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        batch.items.append(item)
        batch.callers.append(caller)
        batch.futures.append(future)
        if len(batch.items) >= self._max_size:
            self._flush(batch)
        result = await future
        if result.get("error"):
            # Vault's per-item message (e.g. "cipher: message authentication failed"): for logs, like hvac's.
            raise VaultRequestRejected(f"transit batch item: {result['error']}")
        return result

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if not batch.items:
            return
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._in_flight.add(task)  # a strong reference until done (the loop keeps only weak ones)
        task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            results = await self._send(batch.items, batch.callers)
            if len(results) != len(batch.items):
                raise VaultRequestRejected(f"transit answered {len(results)} results for {len(batch.items)} items")
        except (VaultError, asyncio.CancelledError) as exc:
            for future in batch.futures:
                if not future.done():
                    # One exception object per request: each is raised (and its traceback grown) in its own task.
                    future.set_exception(
                        type(exc)(*exc.args) if isinstance(exc, VaultError) else asyncio.CancelledError()
                    )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for future, result in zip(batch.futures, results, strict=True):
            if not future.done():  # its request may have been cancelled meanwhile
                future.set_result(result)

    async def close(self) -> None:
        """Send what is waiting, and wait for every call under way."""
        if self._open is not None:
            self._flush(self._open)
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
