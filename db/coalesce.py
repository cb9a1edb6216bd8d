"""Concurrent statements of one kind, gathered into one statement while earlier ones are under way.

A request path that reads (or hides) one row by id pays for a whole round trip: a pooled connection acquired and
released, a statement bound and executed, its result decoded, and on the server a plan run, a snapshot taken and,
for a write, a commit. Under load many requests make the same statement for different ids at the same moment. A
``Coalescer`` lets them share it:

- While fewer than ``max_in_flight`` statements are under way and nothing waits, an item is sent at once, alone,
  from its caller's own task: a quiet service makes exactly the statements it made before.
- Otherwise it waits; when a statement ends, the items waiting go together, up to ``max_size`` to a statement.
  The busier the service, the more each statement carries.
- Only items of one group (the same ``key``: for credentials, the same visibility filter) share a statement, and
  each caller gets its own answer, or its own copy of the statement's error.

Nothing is cached: every item is answered by a statement that started after it was submitted, so a caller sees
every write that had committed when it asked (the same as a statement of its own). A shared write commits (or
fails) for all its items together, each of which is a change its caller asked for.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from db import metrics

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

Run = Callable[[K, list[T]], Awaitable[list[R]]]
"""Runs one statement for a group's items; returns one answer per item, in their order."""


class Coalescer(Generic[K, T, R]):
    """The statements of one kind (``run``), shared as the module's docstring says; one per pool and event loop."""

    def __init__(self, name: str, run: Run[K, T, R], *, max_size: int = 64, max_in_flight: int = 4) -> None:
        self._name = name
        self._run = run
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._waiting: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: T) -> R:
        """``item``'s answer, from a statement it may share with other items of ``key``."""
        loop = asyncio.get_running_loop()
        if self._in_flight < self._max_in_flight and not self._waiting:
            self._in_flight += 1
            metrics.observe_batch(self._name, 1)
            try:
                return (await self._run(key, [item]))[0]
            finally:
                self._in_flight -= 1
                if self._waiting:
                    self._schedule(loop)
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.setdefault(key, []).append((item, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            # In a context of its own: a shared statement belongs to none of its callers (not to the transaction,
            # the request id or the trace span of whichever caller happened to schedule it).
            loop.call_soon(self._dispatch, context=contextvars.Context())

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._waiting and self._in_flight < self._max_in_flight:
            key = next(iter(self._waiting))
            waiting = self._waiting[key]
            batch, rest = waiting[: self._max_size], waiting[self._max_size :]
            if rest:
                self._waiting[key] = rest
            else:
                del self._waiting[key]
            batch = [(item, future) for item, future in batch if not future.cancelled()]  # its caller left
            if not batch:
                continue
            self._in_flight += 1
            metrics.observe_batch(self._name, len(batch))
            task = asyncio.get_running_loop().create_task(self._answer(key, batch))
            self._tasks.add(task)  # a strong reference until done (the loop keeps only weak ones)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, key: K, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._run(key, [item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):  # the statement was cancelled (shutdown): so are its reads
                    future.cancel()
                else:
                    # Each caller raises its own copy: one exception object raised in several tasks would have
                    # their tracebacks grafted onto each other.
                    future.set_exception(_copy(exc))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():  # its request may have been cancelled meanwhile
                    future.set_result(answer)
        finally:
            self._in_flight -= 1
            if self._waiting:
                self._schedule(asyncio.get_running_loop())


def _copy(exc: BaseException) -> BaseException:
    try:
        return copy.copy(exc)
    except Exception:  # an exception type that cannot be copied: the same object, rather than none
        return exc
