"""The service's own schedule: purge and proactive refresh, each a background task for the app's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from service.credentials.service import CredentialService
from service.maintenance.purge import purge
from service.maintenance.refresh_due import refresh_due

log = logging.getLogger("service.maintenance")


@asynccontextmanager
async def every(name: str, interval: float, work: Callable[[], Awaitable[None]], jitter: bool) -> AsyncIterator[None]:
    """Run ``work`` every ``interval`` seconds (jittered by +-50%, so instances started together do not run in
    step) while the block runs; 0 means never. A failed round is logged and retried at the next one."""
    if interval == 0:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval * (random.uniform(0.5, 1.5) if jitter else 1.0))  # noqa: S311 (not crypto)
            try:
                await work()
            except Exception as exc:
                log.error("%s failed: %s", name, type(exc).__name__)  # safe: class name only

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def scheduled(
    service: CredentialService, purge_interval: float, refresh_interval: float, refresh_window: timedelta
) -> AsyncIterator[None]:
    """The purge of deletions past their retention window, and the proactive refresh, which spreads each pass's
    refreshes over up to half its interval (the row lock keeps it single-flight with reveals and other instances)."""

    async def purge_round() -> None:
        purged = await purge(service)
        if purged:
            log.info("purged %d deleted credential(s) past the retention window", purged)

    async def refresh_round() -> None:
        report = await refresh_due(service, refresh_window, spread=refresh_interval / 2)
        if report.due:
            log.info("proactive token refresh: %s", report.summary())  # safe: counts only

    async with (
        every("purge", purge_interval, purge_round, jitter=False),
        every("proactive-refresh", refresh_interval, refresh_round, jitter=True),
    ):
        yield
