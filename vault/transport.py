"""An async HTTP transport (aiohttp) for the few Vault endpoints on the request path: transit encrypt/decrypt
(``batch_input`` too), KV data read and write (with ``cas``) and KV destroy.

Why not hvac for these: hvac is synchronous, so each call ran in a worker thread that fought the event loop for
the GIL; measured per transit call, ~160 µs of CPU through aiohttp against 680-1000 µs through hvac in threads
(and 750-1450 µs through httpx). hvac stays for everything else (log-in, renewal, bootstrap, admin, listings):
the token those calls keep fresh is the one this transport sends.

Every request carries the audited headers of every API request it serves (``X-Request-Id``,
``X-Credentials-Actor``, ``X-Credentials-Workspace``); a batched call repeats each header once per request it
serves, and Vault's audit entry records the header as the list of those values. Errors map to the same
``vault.errors`` classes as the hvac path (``vault.errors.translate``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import msgspec
from multidict import CIMultiDict

from vault import metrics, tracing
from vault.errors import (
    CAS_MISMATCH,
    SecretNotFound,
    VaultError,
    VaultPermissionDenied,
    VaultRequestRejected,
    VaultTlsRefused,
    VaultUnavailable,
    VersionConflict,
    tls_reason,
)

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Headers(msgspec.Struct, frozen=True):
    """The audited headers of one call: one value per API request it serves (several for a batched call)."""

    request_ids: tuple[str, ...]
    actors: tuple[str, ...]
    workspaces: tuple[str, ...]


def _error(status: int, body: dict[str, Any], method: str, path: str) -> VaultError:
    """The same classes hvac's exceptions translate to (``vault.errors.translate``); messages for logs only."""
    errors = [str(e) for e in body.get("errors") or []]
    message = f"{method} {path}: {status} {'; '.join(errors)}"
    if status == 403:
        return VaultPermissionDenied(message)
    if status == 404:
        return SecretNotFound(message)
    if status == 400 and any(CAS_MISMATCH in e for e in errors):
        return VersionConflict(message)
    if status == 429 or status >= 500:
        return VaultUnavailable(message)
    return VaultRequestRejected(message)


class VaultTransport:
    """One aiohttp session (a keep-alive pool of ``pool_size`` connections) to one Vault address.

    ``token`` is read on every call, so a token renewed or replaced by hvac's token manager is used at once.
    ``cacert`` (``VAULT_CACERT``) is the PEM file of the CA that Vault's certificate must chain to, as for hvac; None
    checks an ``https`` address against the system's trust store.
    """

    def __init__(
        self, addr: str, token: Callable[[], str], *, pool_size: int, timeout: float, cacert: str | None = None
    ) -> None:
        self._addr = addr.rstrip("/")
        self._token = token
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # Built once (loading the CA file), here rather than per connection; True is aiohttp's default verification.
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=cacert) if cacert else True

    def _open(self) -> aiohttp.ClientSession:
        # Made lazily, on the loop that uses it (aiohttp binds a session to its loop).
        connector = aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30, ttl_dns_cache=300, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, trust_env=False, skip_auto_headers=("User-Agent",)
        )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, path: str, headers: Headers, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``method`` ``/v1/<path>`` with ``body`` as JSON; the response's JSON (``{}`` for 204).

        A 400 whose body still holds ``data.batch_results`` (every item of a batch failed) is returned, not
        raised: each item's error belongs to its own request.
        """
        session = self._session or self._open()
        sent: CIMultiDict[str] = CIMultiDict({"X-Vault-Token": self._token(), "Content-Type": "application/json"})
        for name, values in (
            ("X-Request-Id", headers.request_ids),
            ("X-Credentials-Actor", headers.actors),
            ("X-Credentials-Workspace", headers.workspaces),
        ):
            for value in values:
                sent.add(name, value)
        data = None if body is None else _encode(body)
        # The same metrics and spans as the hvac path (vault.client.AuditedAdapter): by operation, never by id.
        op = metrics.operation(path)
        started = time.perf_counter()
        try:
            with tracing.span(f"vault {method} {op}", {"vault.operation": op, "http.request.method": method}):
                try:
                    async with session.request(method, f"{self._addr}/v1/{path}", data=data, headers=sent) as response:
                        raw = await response.read()
                        status = response.status
                except aiohttp.ClientSSLError as exc:
                    raise VaultTlsRefused(f"TLS with Vault failed: {tls_reason(exc)}") from exc
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    raise VaultUnavailable(f"cannot reach Vault: {type(exc).__name__}") from exc
            parsed: dict[str, Any] = _decode(raw) if raw else {}
            if status < 400:
                return parsed
            if status == 400 and isinstance(parsed.get("data"), dict) and "batch_results" in parsed["data"]:
                return parsed
            raise _error(status, parsed, method, path)
        except VaultError as exc:
            metrics.VAULT_CALL_ERRORS.labels(op, type(exc).__name__).inc()
            raise
        finally:
            metrics.VAULT_CALL_SECONDS.labels(op, method.upper()).observe(time.perf_counter() - started)


def headers_of(calls: Sequence[tuple[str, str, str]]) -> Headers:
    """The audited headers of a call serving ``calls`` (request id, actor, workspace), one per item, in order:
    the i-th value of each header names the request of the i-th ``batch_input`` item."""
    seen = list(calls)
    return Headers(
        request_ids=tuple(c[0] for c in seen), actors=tuple(c[1] for c in seen), workspaces=tuple(c[2] for c in seen)
    )
