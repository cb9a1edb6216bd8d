"""Wrapping the app's ASGI handler with the telemetry layers (metrics and access lines; traces when enabled)."""

from __future__ import annotations

from litestar import Litestar

from service.config import TelemetrySettings
from service.telemetry.middleware import telemetry


def instrument(app: Litestar, settings: TelemetrySettings) -> None:
    """Wrap ``app``'s whole ASGI handler, so unmatched routes are seen too (Litestar's ``middleware`` runs only
    after a route matched)."""
    handler = app.asgi_handler
    if settings.traces:
        from service.telemetry import tracing

        tracing.install_provider_once()
        handler = tracing.traced(handler)
    app.asgi_handler = telemetry(handler, access_lines=settings.access_log)
