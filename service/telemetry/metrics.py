"""The service's own Prometheus metrics (Vault's and Postgres's are in ``vault.metrics`` and ``db.metrics``).

Label values come from fixed sets (route templates, methods, status codes, reason slugs, outcomes), never from what
a caller sent: no secret, key, token or id can reach a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "credentials_http_requests_total",
    "HTTP requests served, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "credentials_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_IN_FLIGHT = Gauge("credentials_http_requests_in_flight", "HTTP requests being served")
AUTH_FAILURES = Counter(
    "credentials_auth_failures_total",
    "Requests refused by authentication (401) or authorization (403), by reason",
    ["reason"],
)
OAUTH_REFRESHES = Counter(
    "credentials_oauth_refreshes_total",
    "OAuth token refreshes, by outcome (ok; rejected: the provider refused for good; failed: this time)",
    ["outcome"],
)
VAULT_CALLS_QUEUED = Gauge(
    "credentials_vault_calls_queued", "Vault calls waiting for a free worker thread (the pool is saturated when > 0)"
)


def count_auth_failure(reason: str) -> None:
    """One refused request: an ``AuthFailure`` value for a 401, ``forbidden`` for a 403."""
    AUTH_FAILURES.labels(reason).inc()
