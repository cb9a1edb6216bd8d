"""OpenTelemetry spans for Vault calls, when the optional ``opentelemetry-api`` is installed (the ``telemetry``
extra); without it, or with no tracer provider configured, a span costs one no-op context manager.

Attributes are the operation and the method only: never a path's ids, a header, a token or a body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the extra is not installed
    _trace = None  # type: ignore[assignment]

_tracer = _trace.get_tracer("credentials.vault") if _trace is not None else None


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, str]) -> Iterator[None]:
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, kind=_trace.SpanKind.CLIENT, attributes=dict(attributes)):
        yield
