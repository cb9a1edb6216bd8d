"""An async HTTP transport (aiohttp) for the few Vault endpoints on the request path: transit encrypt/decrypt
(``batch_input`` too), KV data read and write (with ``cas``) and KV destroy.

Why not hvac for these: hvac is synchronous, so each call ran in a worker thread that fought the event loop for
the GIL; measured per transit call, ~160 µs of CPU through aiohttp against 680-1000 µs through hvac in threads
(and 750-1450 µs through httpx). hvac stays for everything else (log-in, renewal, bootstrap, admin, listings):
the token those calls keep fresh is the one this transport sends.

Every request carries the audited headers of every API request it serves (``X-Request-Id``,
``X-Credentials-Actor``, ``X-Credentials-Workspace``); a batched call repeats each header once per request it
serves, and Vault's audit entry records the header as the list of those values. Errors map to the same
``vault.errors`` classes as the hvac path (``vault.errors.translate``). With several Vault nodes, calls fail over
between them under the same policy as hvac's (``vault.nodes``).
"""

from __future__ import annotations

import asyncio
import logging
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
from vault.nodes import (
    Failure,
    NodeRing,
    RetryPolicy,
    Walk,
    cas_refused,
    classify_exception,
    classify_response,
    landed_write,
)

log = logging.getLogger("vault.transport")

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
    if status == 429 or status >= 500 or 300 <= status < 400:
        return VaultUnavailable(message)
    return VaultRequestRejected(message)


class VaultTransport:
    """One aiohttp session (a keep-alive pool of ``pool_size`` connections per node) to the nodes of ``ring``.

    With several nodes, each call follows the failover policy of ``vault.nodes`` (the same ``NodeRing`` as the hvac
    session, so both transports ask the same node first): a node that refuses or cannot be reached is skipped, a call
    lost in flight is sent once more to another node when ``policy`` says repeating it is harmless (transit
    encrypt/decrypt, KV reads, KV writes with check-and-set: a refusal for check-and-set after a lost attempt is read
    back, ``landed_write``), and while no node can serve the call waits up to ``wait_seconds``. Every attempt carries
    the call's audited headers; metrics and the trace span are per call, as on the hvac path.

    ``token`` is read on every call, so a token renewed or replaced by hvac's token manager is used at once.
    ``cacert`` (``VAULT_CACERT``) is the PEM file of the CA that Vault's certificate must chain to, as for hvac; None
    checks an ``https`` address against the system's trust store.
    """

    def __init__(
        self,
        addr: str | NodeRing,
        token: Callable[[], str],
        *,
        pool_size: int,
        timeout: float,
        policy: RetryPolicy | None = None,
        wait_seconds: float = 10.0,
        cacert: str | None = None,
    ) -> None:
        self._ring = addr if isinstance(addr, NodeRing) else NodeRing([addr.rstrip("/")])
        self._token = token
        self._pool_size = pool_size
        self._policy = policy or RetryPolicy()
        self._wait = wait_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # Built once (loading the CA file), here rather than per connection; True is aiohttp's default verification.
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=cacert) if cacert else True

    def _open(self) -> aiohttp.ClientSession:
        # Made lazily, on the loop that uses it (aiohttp binds a session to its loop).
        nodes = len(self._ring.addrs)
        connector = aiohttp.TCPConnector(
            limit=self._pool_size * nodes,
            limit_per_host=self._pool_size,
            keepalive_timeout=30,
            ttl_dns_cache=300,
            ssl=self._ssl,
        )
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
        # The same metrics and spans as the hvac path (vault.client.AuditedAdapter): by operation, never by id.
        op = metrics.operation(path)
        started = time.perf_counter()
        try:
            with tracing.span(f"vault {method} {op}", {"vault.operation": op, "http.request.method": method}):
                status, raw = await self._send(session, method, f"/v1/{path}", sent, body)
            parsed: dict[str, Any] = _decode(raw) if raw else {}
            if status < 300:
                return parsed
            if status == 400 and isinstance(parsed.get("data"), dict) and "batch_results" in parsed["data"]:
                return parsed
            raise _error(status, parsed, method, path)
        except VaultError as exc:
            metrics.VAULT_CALL_ERRORS.labels(op, type(exc).__name__).inc()
            raise
        finally:
            metrics.VAULT_CALL_SECONDS.labels(op, method.upper()).observe(time.perf_counter() - started)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        headers: CIMultiDict[str],
        body: dict[str, Any] | None,
    ) -> tuple[int, bytes]:
        """The status and body of the answer to pass on, from the first node able to give one."""
        data = None if body is None else _encode(body)
        if len(self._ring.addrs) == 1:
            try:
                return await _once(session, method, self._ring.addrs[0] + path, headers, data)
            except aiohttp.ClientSSLError as exc:
                raise VaultTlsRefused(f"TLS with Vault failed: {tls_reason(exc)}") from exc
            except _NETWORK_ERRORS as exc:
                raise VaultUnavailable(f"cannot reach Vault: {type(exc).__name__}") from exc
        if self._ring.lookup_due():
            await self._find_active(session)
        walk = Walk(self._ring, replay_safe=self._policy.replay_safe(method, path, body), wait_seconds=self._wait)
        error: BaseException | None = None
        refused: tuple[int, bytes] | None = None
        for index, pause in walk:
            if pause:
                await asyncio.sleep(pause)
            node = self._ring.addrs[index]
            failure: Failure | None
            try:
                status, raw = await _once(session, method, node + path, headers, data)
            except _NETWORK_ERRORS as exc:
                failure, error, refused = classify_exception(exc), exc, None
            else:
                failure = classify_response(path, status, raw.decode(errors="replace") if status == 500 else "")
                if failure is None:
                    if walk.lost and status == 400:
                        status, raw = await self._landed_or(session, (status, raw), method, path, body, node, headers)
                    walk.served(index)
                    return status, raw
                error, refused = None, (status, raw)
            if not walk.failed(index, failure, method, path):
                break
        if refused is not None:
            return refused  # raised by the caller as what it is (503: VaultUnavailable, ...)
        if isinstance(error, aiohttp.ClientSSLError):
            raise VaultTlsRefused(f"TLS with Vault failed: {tls_reason(error)}") from error
        reason = type(error).__name__ if error is not None else "no node could serve"
        raise VaultUnavailable(f"cannot reach Vault: {reason}") from error

    async def _landed_or(
        self,
        session: aiohttp.ClientSession,
        refused: tuple[int, bytes],
        method: str,
        path: str,
        body: dict[str, Any] | None,
        node: str,
        headers: CIMultiDict[str],
    ) -> tuple[int, bytes]:
        """After a lost check-and-set write, a check-and-set refusal may mean the lost attempt landed: look."""
        read_path = self._policy.cas_read_path(method, path, body)
        if read_path is None or not cas_refused(refused[1].decode(errors="replace")):
            return refused
        try:
            status, raw = await _once(session, "GET", node + read_path, headers, None)
        except _NETWORK_ERRORS:
            return refused
        answer = landed_write(body, _decode(raw)) if status == 200 and raw else None
        if answer is None:
            return refused
        log.warning("Vault: a lost write to %s had landed; reporting it as done", path)
        return 200, _encode(answer)

    async def _find_active(self, session: aiohttp.ClientSession) -> None:
        """Ask each node's ``sys/health`` (not audited) which one is active; prefer it."""
        for index, node in enumerate(self._ring.addrs):
            try:
                async with session.get(
                    f"{node}/v1/sys/health", allow_redirects=False, timeout=aiohttp.ClientTimeout(total=1.0)
                ) as response:
                    status = response.status
            except _NETWORK_ERRORS:
                continue
            if status == 200:
                self._ring.found_active(index)
                return


_NETWORK_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


async def _once(
    session: aiohttp.ClientSession, method: str, url: str, headers: CIMultiDict[str], data: bytes | None
) -> tuple[int, bytes]:
    # A standby's redirect points at the active node's api_addr, which may be the node that just died: the policy
    # asks another node instead of following it.
    async with session.request(method, url, data=data, headers=headers, allow_redirects=False) as response:
        return response.status, await response.read()


def headers_of(calls: Sequence[tuple[str, str, str]]) -> Headers:
    """The audited headers of a call serving ``calls`` (request id, actor, workspace), one per item, in order:
    the i-th value of each header names the request of the i-th ``batch_input`` item."""
    seen = list(calls)
    return Headers(
        request_ids=tuple(c[0] for c in seen), actors=tuple(c[1] for c in seen), workspaces=tuple(c[2] for c in seen)
    )
