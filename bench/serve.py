"""Serve an ASGI app factory with uvicorn (the same settings for the service and the HTTP floor), plus probes:

- an event-loop lag monitor (a task sleeping 10 ms that records how late it wakes up), always on;
- with ``--asyncio-debug``: the asyncio event loop in debug mode with ``slow_callback_duration`` set, counting
  asyncio's ``Executing <Handle ...> took N seconds`` warnings (each one is a callback that blocked the loop).

The probe results are written as JSON to ``--probe-out`` when the server stops (SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import time
from typing import Any

import uvicorn


class Probe:
    def __init__(self) -> None:
        self.lag_max = 0.0
        self.lag_samples = 0
        self.lag_over_20ms = 0
        self.lag_over_100ms = 0
        self.slow_callbacks: list[str] = []
        """Callbacks over the threshold once the server serves (its first request came in)."""
        self.slow_startup_callbacks: list[str] = []
        """Those before: the app's start-up (pools, caches, the collector's settling), when no request waits."""
        self.serving = False

    async def monitor(self) -> None:
        interval = 0.01
        while True:
            start = time.perf_counter()
            await asyncio.sleep(interval)
            lag = time.perf_counter() - start - interval
            if not self.serving:  # a start-up pause keeps no request waiting: it is reported, not counted
                continue
            self.lag_samples += 1
            self.lag_max = max(self.lag_max, lag)
            self.lag_over_20ms += lag > 0.02
            self.lag_over_100ms += lag > 0.1

    def as_dict(self) -> dict[str, Any]:
        return {
            "lag_max_ms": round(self.lag_max * 1000, 2),
            "lag_samples": self.lag_samples,
            "lag_over_20ms": self.lag_over_20ms,
            "lag_over_100ms": self.lag_over_100ms,
            "slow_callbacks": len(self.slow_callbacks),
            "slow_callback_examples": self.slow_callbacks[:10],
            "slow_startup_callbacks": len(self.slow_startup_callbacks),
            "slow_startup_callback_examples": self.slow_startup_callbacks[:10],
        }


class _SlowCallbackCounter(logging.Handler):
    def __init__(self, probe: Probe) -> None:
        super().__init__(logging.WARNING)
        self.probe = probe

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):
            found = self.probe.slow_callbacks if self.probe.serving else self.probe.slow_startup_callbacks
            found.append(message[:300])


def with_probe(app: Any, probe: Probe, asyncio_debug: bool, slow: float) -> Any:
    tasks: list[asyncio.Task[None]] = []

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and not tasks:
            loop = asyncio.get_running_loop()
            if asyncio_debug:
                loop.set_debug(True)
                loop.slow_callback_duration = slow
                logger = logging.getLogger("asyncio")
                logger.addHandler(_SlowCallbackCounter(probe))
                logger.setLevel(logging.WARNING)
            tasks.append(loop.create_task(probe.monitor()))
        elif scope["type"] == "http":
            probe.serving = True
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("factory", help="module:function returning an ASGI app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto", help="uvicorn loop: auto (uvloop when installed) or asyncio")
    parser.add_argument("--asyncio-debug", action="store_true")
    parser.add_argument("--slow-callback", type=float, default=0.1)
    parser.add_argument("--probe-out", default=None)
    args = parser.parse_args()
    module, _, name = args.factory.partition(":")
    app = getattr(importlib.import_module(module), name)()
    probe = Probe()
    loop = "asyncio" if args.asyncio_debug else args.loop
    try:
        uvicorn.run(
            with_probe(app, probe, args.asyncio_debug, args.slow_callback),
            host="127.0.0.1",
            port=args.port,
            loop=loop,
            http="httptools",
            log_level="warning",
            access_log=False,
            lifespan="on",
            backlog=2048,
        )
    finally:
        if args.probe_out:
            with open(args.probe_out, "w") as out:
                json.dump(probe.as_dict(), out)


if __name__ == "__main__":
    main()
