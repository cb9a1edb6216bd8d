"""Optional OpenTelemetry traces (``CREDENTIALS_OTEL_TRACES=true``, the ``telemetry`` extra installed).

A span per HTTP request (server), with the Vault calls (``vault/tracing.py``) and Postgres statements
(``db/metrics.py``) under it. Exported with OTLP when ``opentelemetry-exporter-otlp`` is installed (configured by
the standard ``OTEL_EXPORTER_OTLP_*`` variables), else to the console. Tests install an in-memory exporter.
Span attributes are route templates, methods, statuses and operations only.
"""

from __future__ import annotations

from typing import Any

from service.config import ConfigError


def install_provider(exporter: Any | None = None) -> None:
    """Set a global tracer provider exporting to ``exporter`` (default: OTLP, else console)."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        raise ConfigError(
            "CREDENTIALS_OTEL_TRACES=true needs OpenTelemetry: pip install 'credentials-service[telemetry]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": "credentials-service"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except ImportError:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def install_provider_once() -> None:
    """Install the default provider unless one is set already (a test's in-memory exporter, an embedding app's)."""
    try:
        from opentelemetry import trace
    except ImportError:
        install_provider()  # raises the ConfigError naming the extra
        return
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        install_provider()


def traced(app: Any) -> Any:
    """A server span around each HTTP request, named by its route template once routing has run."""
    from opentelemetry import trace

    tracer = trace.get_tracer("credentials.http")

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with tracer.start_as_current_span(f"{scope['method']} request", kind=trace.SpanKind.SERVER) as span:
            status = 500

            async def send_and_see(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_see)
            finally:
                route = scope.get("path_template") or "unmatched"
                span.update_name(f"{scope['method']} {route}")
                span.set_attributes(
                    {"http.route": route, "http.request.method": scope["method"], "http.response.status_code": status}
                )

    return serve
