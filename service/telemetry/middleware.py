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


def telemetry(app: ASGIApp) -> ASGIApp:
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
            method = scope["method"]
            route = scope.get("path_template") or "unmatched"
            metrics.HTTP_IN_FLIGHT.dec()
            metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
            metrics.HTTP_SECONDS.labels(route, method).observe(elapsed)
            if access.isEnabledFor(logging.INFO):
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
