"""Process tuning for serving: the garbage collector, once start-up is done."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

GEN0_THRESHOLD = 10_000
"""Allocations between young-generation collections (CPython's default is 700). A request allocates a few
thousand short-lived objects; at 700 the collector ran several times per request and walked the frozen start-up
heap's survivors too. Memory stays bounded: the threshold counts objects, and garbage is still collected."""


@asynccontextmanager
async def tuned_gc(app: Litestar) -> AsyncIterator[None]:
    """Freeze what start-up built (modules, app, pools: never garbage) so collections skip it; collect less often."""
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
