"""The hvac client the service uses: explicit url and token, a pooled session, and audited headers per call."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import hvac
import hvac.adapters
import requests

from vault import metrics, tracing
from vault.nodes import FailoverSession, NodeRing, RetryPolicy, mount_pools

# Headers that the bootstrap registers as audited (hmac=false), so each Vault audit entry names the API request,
# the acting principal and the workspace in clear text. Vault stores audited header names in lowercase.
REQUEST_ID_HEADER = "X-Request-Id"
ACTOR_HEADER = "X-Credentials-Actor"
WORKSPACE_HEADER = "X-Credentials-Workspace"
AUDITED_HEADERS = (REQUEST_ID_HEADER, ACTOR_HEADER, WORKSPACE_HEADER)

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_call_headers: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "vault_call_headers", default=_NO_HEADERS
)


@contextmanager
def audit_headers(headers: Mapping[str, str]) -> Iterator[None]:
    """Attach ``headers`` to every Vault request made by this thread inside the block."""
    token = _call_headers.set(headers)
    try:
        yield
    finally:
        _call_headers.reset(token)


class AuditedAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]
    """hvac's JSON adapter plus the calling request's audit headers (hvac's high-level API takes no headers)."""

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        merged = {**_call_headers.get(), **(headers or {})}
        op = metrics.operation(url)
        started = time.perf_counter()
        try:
            with tracing.span(f"vault {method.upper()} {op}", {"vault.operation": op, "http.request.method": method}):
                return super().request(method, url, headers=merged, **kwargs)
        except Exception as exc:
            metrics.VAULT_CALL_ERRORS.labels(op, type(exc).__name__).inc()
            raise
        finally:
            metrics.VAULT_CALL_SECONDS.labels(op, method.upper()).observe(time.perf_counter() - started)


def make_client(
    addr: str | Sequence[str],
    token: str,
    *,
    pool_size: int,
    timeout: float,
    policy: RetryPolicy | None = None,
    failover_seconds: float = 10.0,
    cacert: str | None = None,
    ring: NodeRing | None = None,
) -> hvac.Client:
    """An hvac client with the url and token given explicitly.

    ``addr`` is one node, or the nodes of an HA cluster: then every call goes through a ``FailoverSession``
    (``vault/nodes.py``), which skips nodes that cannot serve and waits up to ``failover_seconds`` for one that can;
    ``ring`` shares its choice of node with the store's aiohttp transport.
    hvac silently falls back to ``VAULT_TOKEN`` and ``~/.vault-token`` when ``token`` is None, so an empty
    string is passed until a login sets a real one. The HTTP pool holds one connection per worker thread (per node),
    so no call waits for a connection or opens a throwaway one. ``cacert`` (``VAULT_CACERT``) is the PEM file of the
    CA that Vault's certificate must chain to; None checks ``https`` nodes against the system's trust store.
    """
    addrs = (addr,) if isinstance(addr, str) else tuple(addr)
    session = (
        FailoverSession(addrs, policy=policy, wait_seconds=failover_seconds, ring=ring)
        if len(addrs) > 1
        else requests.Session()
    )
    # No proxy variables, .netrc or CA-bundle variables from the environment: Vault traffic goes where VAULT_ADDR
    # says, and requests stops stat-ing ~/.netrc on every call (seen on the hot path in a profile).
    session.trust_env = False
    # Explicit, on the session and on hvac (which would otherwise read VAULT_CACERT/VAULT_CAPATH itself at import).
    verify: str | bool = cacert or True
    session.verify = verify
    mount_pools(session, nodes=len(addrs), pool_size=pool_size)
    return hvac.Client(
        url=addrs[0], token=token, session=session, timeout=timeout, verify=verify, adapter=AuditedAdapter
    )
