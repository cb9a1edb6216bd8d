"""Telemetry: Prometheus metrics (``/metrics``), request-aware logs (text or JSON), optional OpenTelemetry traces."""
