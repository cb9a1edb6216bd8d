"""The service's own provider checks, on the schedule ``CREDENTIALS_CHECK_INTERVAL`` sets."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from service.maintenance.jobs import every
from service.proxy.check import CheckService, check_due

log = logging.getLogger("service.maintenance")


@asynccontextmanager
async def scheduled_checks(checks: CheckService, interval: int) -> AsyncIterator[None]:
    """Every interval/10 (at least 1 s), check the credentials whose last check is ``interval`` old (0: never).
    Instances running this together claim each check in Postgres, so each due check runs once."""

    async def round_() -> None:
        report = await check_due(checks, timedelta(seconds=interval))
        if report.due:
            log.info("provider checks: %s", report.summary())  # safe: counts only

    async with every("provider-check", max(1.0, interval / 10) if interval else 0, round_, jitter=True):
        yield
