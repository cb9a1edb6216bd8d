"""Prometheus metrics of the calls to Vault: latency and errors by operation, and the token's renewals and logins.

Labels are operations (``transit/encrypt``, ``credentials/data``, ``auth/token/renew-self``), methods and error
class names: never a path's workspace or credential id, a token, or any value sent or received.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

VAULT_CALL_SECONDS = Histogram(
    "credentials_vault_call_duration_seconds",
    "Duration of one HTTP call to Vault, by operation",
    ["operation", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
VAULT_CALL_ERRORS = Counter(
    "credentials_vault_call_errors_total", "Vault calls that failed, by operation and error", ["operation", "error"]
)
VAULT_TOKEN_EVENTS = Counter(
    "credentials_vault_token_events_total",
    "The service's Vault token: renewals and AppRole logins, by outcome",
    ["event", "outcome"],
)


@functools.lru_cache(maxsize=256)
def operation(url: str) -> str:
    """The operation a Vault URL names, without ids: ``auth/...`` and ``sys/...`` by their first segments, any other
    call as ``<mount>/<endpoint>``."""
    path = url.split("?", 1)[0].split("/v1/", 1)[-1].strip("/")
    parts = path.split("/")
    if parts[0] == "auth":
        return "/".join(parts[:3])
    return "/".join(parts[:2])
