"""The outermost layer of the app: counts and times every HTTP request by route template, writes its access line,
and makes the request findable by log records (``logs.current_scope``).

It wraps Litestar's whole ASGI handler (not a route's), so it also sees requests that match no route (``route`` is
then ``unmatched``). The work per request is a clock read, a contextvar set and reset, two metric updates and one
log record; the route template comes from the scope Litestar's router fills in.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service.telemetry import metrics
from service.telemetry.logs import current_scope

access = logging.getLogger("service.access")

ASGIApp = Any
# A method outside these is counted as OTHER: label values must not be whatever a client sends.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _observe(route: str, method: str, status: int, seconds: float) -> None:
    """Count and time one request; the labelled series are looked up once and kept (``labels()`` takes a lock and
    builds a key on every call, the dominant cost otherwise)."""
    key = (route, method, status)
    series = _series.get(key)
    if series is None:
        series = _series[key] = (
            metrics.HTTP_REQUESTS.labels(route, method, str(status)),
            metrics.HTTP_SECONDS.labels(route, method),
        )
    series[0].inc()
    series[1].observe(seconds)


def telemetry(app: ASGIApp, *, access_lines: bool = True) -> ASGIApp:
    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app fails before it answers

        async def send_and_see(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = current_scope.set(scope)
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await app(scope, receive, send_and_see)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = scope.get("path_template") or "unmatched"
            metrics.HTTP_IN_FLIGHT.dec()
            _observe(route, method, status, elapsed)
            if access_lines and access.isEnabledFor(logging.INFO):
                # The path, never the query string (a search term is the caller's data).
                access.info(
                    "%s %s %d %.1fms",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={"route": route, "method": method, "status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            current_scope.reset(token)

    return serve
