"""``GET /metrics``: the Prometheus exposition of this process's metrics.

Open by default, like most exporters, because nothing secret is in it (labels are route templates, methods,
statuses, operations and reasons); it does show traffic and error rates, so where the port is reachable by more
than the scraper, set ``CREDENTIALS_METRICS_TOKEN`` and have Prometheus send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request, get
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from service.telemetry import metrics


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    expected: str | None = request.app.state.settings.telemetry.metrics_token
    if expected is not None:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {expected}".encode()):
            return Response(b'{"detail":"Not authenticated"}', status_code=401, media_type="application/json")
    services = getattr(request.app.state, "services", None)
    if services is not None:
        metrics.VAULT_CALLS_QUEUED.set(services.store.queued_calls())
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
