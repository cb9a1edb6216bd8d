"""Several Vault/OpenBao nodes of one HA cluster: which node to call, what a failure means, when to call again.

The policy is a set of pure functions (``parse_addrs``, ``classify_response``, ``classify_exception``,
``replay_safe``, ``cas_of``, ``landed_write``) and two small objects, ``NodeRing`` (which node to ask first) and
``Walk`` (one call's attempts over the nodes), so that both transports apply the same rules: ``FailoverSession`` to
every call hvac makes, ``vault.transport.VaultTransport`` to the request path's aiohttp calls.

A failure is one of three kinds:

- ``REFUSED``: the node answered that it cannot serve (sealed, not initialised, a standby without an active node,
  a redirect to the active node). The request was not carried out: the next node is always tried.
- ``UNREACHABLE``: no connection could be opened. Nothing was sent: the next node is always tried.
- ``LOST``: the request was sent and no answer came (the node died, the connection was reset, a read timed
  out), or a node answered 500/502 while forwarding. It may have been carried out. It is sent again to another
  node once, and only when doing it twice cannot do harm: reads, transit encrypt/decrypt/rewrap (pure
  functions of their input), idempotent metadata writes, and KV data writes with check-and-set (a second
  write of the same version is refused by Vault, never stored twice). When the retry of such a write is refused
  for check-and-set, the version it asked for is read back: if it holds the ciphertext we sent, the lost attempt
  landed and the write is reported as done (a transit ciphertext carries a random nonce, so equality proves the
  version is ours).

While no node can serve (an election after the leader died), calls wait, up to ``wait_seconds``, for one that
can. The headers of the call (the audited request id, actor and workspace) go with every attempt.
"""

from __future__ import annotations

import enum
import json as jsonlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import requests
import requests.adapters
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

log = logging.getLogger("vault.nodes")


class Failure(enum.Enum):
    """Why one attempt on one node did not give an answer to pass on."""

    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    LOST = "lost"


def parse_addrs(*values: str | None) -> tuple[str, ...]:
    """The node URLs in ``values`` (each a URL or a comma-separated list), in order, without repeats.

    Raises ``ValueError`` naming the first entry that is not an ``http(s)://host[:port]`` URL.
    """
    seen: dict[str, None] = {}
    for value in values:
        for raw in (value or "").split(","):
            addr = raw.strip().rstrip("/")
            if not addr:
                continue
            parts = urlsplit(addr)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"{addr!r} is not a Vault address such as http://10.0.0.1:8200")
            seen.setdefault(addr, None)
    return tuple(seen)


# 503: sealed, or a standby that knows no active node; 501: not initialised. 307/308: a standby that cannot
# forward points at the active node's api_addr (which may be the node that just died): another node is asked.
_REFUSED_STATUSES = frozenset({501, 503, 307, 308})
# A standby that could not forward answers 500/502 ("error forwarding request"); the write may have reached the
# active node before it died.
_AMBIGUOUS_STATUSES = frozenset({500, 502})


# A standby that cannot find the active node (an election is under way) answers 500 with this: it did nothing.
_NO_ACTIVE_NODE = "active cluster node not found"


def classify_response(path: str, status: int, text: str = "") -> Failure | None:
    """What an HTTP answer (``text``: its body) means for failover; None when it is the answer to pass on."""
    if status in _REFUSED_STATUSES or (status == 500 and _NO_ACTIVE_NODE in text):
        return Failure.REFUSED
    if status == 429 and path.startswith("/v1/sys/health"):
        return Failure.REFUSED  # a standby's health code: look for the active node
    if status in _AMBIGUOUS_STATUSES:
        return Failure.LOST
    return None


class LostInFlight(requests.exceptions.ConnectionError):
    """A call was sent and no node answered it (``Failure.LOST``): it may have been carried out."""


def classify_exception(exc: BaseException) -> Failure:
    """UNREACHABLE when nothing was sent (connection refused, connect timeout, DNS), else LOST; for the exceptions of
    requests (hvac) and of aiohttp (``vault.transport``)."""
    if isinstance(
        exc, requests.exceptions.ConnectTimeout | aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    ):
        return Failure.UNREACHABLE
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        if isinstance(inner, NewConnectionError | ConnectTimeoutError):
            return Failure.UNREACHABLE
    return Failure.LOST


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which requests may be sent again after an attempt was lost in flight; knows the service's mounts."""

    kv_mount: str = "credentials"
    transit_mount: str = "transit"

    def replay_safe(self, method: str, path: str, body: Any) -> bool:
        """True when carrying the request out twice has the effect of carrying it out once."""
        method = method.upper()
        if method in ("GET", "HEAD", "LIST"):
            return True
        route = path.removeprefix("/v1/")
        transit = f"{self.transit_mount}/"
        if route.startswith(transit):
            return route.removeprefix(transit).split("/", 1)[0] in ("encrypt", "decrypt", "rewrap")
        kv = f"{self.kv_mount}/"
        if route.startswith(kv):
            kind = route.removeprefix(kv).split("/", 1)[0]
            if kind == "data" and method in ("POST", "PUT"):
                return cas_of(body) is not None
            # Metadata settings are absolute values; deleting or destroying twice is deleting or destroying once.
            return kind in ("metadata", "destroy") and method in ("POST", "PUT", "DELETE")
        # Logging in or renewing twice only leaves one more (or a longer-lived) token of the service's own.
        return route.startswith("auth/token/renew-self") or route.endswith("/login")

    def cas_read_path(self, method: str, path: str, body: Any) -> str | None:
        """For a KV data write with check-and-set, the read that shows whether it landed; else None."""
        cas = cas_of(body)
        if cas is None or method.upper() not in ("POST", "PUT"):
            return None
        if not path.removeprefix("/v1/").startswith(f"{self.kv_mount}/data/"):
            return None
        return f"{path}?version={cas + 1}"


def cas_of(body: Any) -> int | None:
    """The check-and-set version of a KV v2 write body, or None when it has none."""
    if not isinstance(body, Mapping):
        return None
    options = body.get("options")
    cas = options.get("cas") if isinstance(options, Mapping) else None
    return cas if isinstance(cas, int) and not isinstance(cas, bool) else None


class NoNodeAvailable(requests.exceptions.ConnectionError):
    """Every node refused or could not be reached until the wait ran out (hvac callers see a ConnectionError)."""


class NodeRing:
    """The nodes of one cluster and the one to ask first, shared by every transport of one store (thread-safe).

    The node that served last is asked first. After a failure the active node is looked up again (each transport
    asks ``sys/health``, which is not audited, at most every ``pause_seconds``), so that calls go back to the node
    holding the newest data rather than stay on a standby that may lag (OpenBao standbys serve reads locally).
    """

    def __init__(self, addrs: Sequence[str], *, pause_seconds: float = 0.1) -> None:
        if not addrs:
            raise ValueError("at least one Vault address is needed")
        self.addrs = tuple(addrs)
        self.pause_seconds = pause_seconds
        self._preferred = 0
        self._lock = threading.Lock()
        self._rediscover = len(self.addrs) > 1
        self._rediscover_after = 0.0

    @property
    def preferred(self) -> str:
        """The node asked first right now."""
        return self.addrs[self._preferred]

    def order(self) -> list[int]:
        """The nodes' indexes in the order to try them: the preferred one first."""
        start = self._preferred
        return [(start + step) % len(self.addrs) for step in range(len(self.addrs))]

    def moved_to(self, index: int) -> None:
        """A call that failed on other nodes was answered by ``index``: ask it first, and look the active node up again
        before the next call (``index`` may be a standby, and calls answered meanwhile by the node that was preferred
        must not undo a lookup made since)."""
        with self._lock:
            self._preferred = index
            self._rediscover = True

    def failed(self) -> None:
        """An attempt failed: look the active node up again before the next call."""
        self._rediscover = True

    def lookup_due(self) -> bool:
        """True when the caller should look the active node up now (then it calls ``found_active``)."""
        if not self._rediscover:
            return False
        now = time.monotonic()
        with self._lock:
            if now < self._rediscover_after:
                return False
            self._rediscover_after = now + self.pause_seconds
        return True

    def found_active(self, index: int) -> None:
        with self._lock:
            moved, self._preferred, self._rediscover = index != self._preferred, index, False
        if moved:
            log.info("Vault: the active node is now %s", self.addrs[index])


class Walk:
    """One call's way over the nodes under the policy above; the transport makes each attempt and reports it.

    Iterating gives ``(index, pause)``: the node to try next and the seconds to wait before trying it (a new round
    over every node while an election is under way). It ends when ``wait_seconds`` have passed; ``failed`` says
    whether the call may go on after a failed attempt.
    """

    def __init__(self, ring: NodeRing, *, replay_safe: bool, wait_seconds: float) -> None:
        self.ring = ring
        self.replay_safe = replay_safe
        self.wait_seconds = wait_seconds
        self.lost = False
        """An attempt was lost in flight: a check-and-set refusal after it may mean that attempt landed."""
        self.failures = 0

    def __iter__(self) -> Iterator[tuple[int, float]]:
        deadline = time.monotonic() + self.wait_seconds
        pause = 0.0
        while True:
            for index in self.ring.order():
                yield index, pause
                pause = 0.0
            if time.monotonic() >= deadline:
                return
            pause = self.ring.pause_seconds

    def served(self, index: int) -> None:
        """Node ``index`` gave the answer; when an attempt failed before, the ring moves to it."""
        if self.failures:
            self.ring.moved_to(index)

    def failed(self, index: int, failure: Failure, method: str, path: str) -> bool:
        """Record a failed attempt on node ``index``; False when the call must not be sent again."""
        self.failures += 1
        self.ring.failed()
        if failure is Failure.LOST:
            if self.lost or not self.replay_safe:
                return False
            self.lost = True
        # A lost call is worth a warning (it may have been carried out); refusals are routine in an election.
        level = logging.WARNING if failure is Failure.LOST else logging.INFO
        node = self.ring.addrs[index]
        log.log(level, "Vault node %s: %s on %s %s; trying another node", node, failure.value, method, path)
        return True


def cas_refused(text: str) -> bool:
    """A 400 answer's body says the write was refused for check-and-set."""
    return "check-and-set" in text


def landed_write(body: Any, stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """After a lost check-and-set write was refused on its repeat: when the version read back (``stored``, the JSON of
    ``RetryPolicy.cas_read_path``) holds the data sent, the answer the write would have had; else None."""
    data = stored.get("data") or {}
    if not isinstance(body, Mapping) or data.get("data") != body.get("data"):
        return None
    return {"data": data.get("metadata") or {}}


class FailoverSession(requests.Session):
    """A ``requests.Session`` that sends each call hvac makes to the first node able to serve it.

    hvac joins its ``base_uri`` (the first node) to each path; the session swaps in the node it sends to, as the
    ``NodeRing`` (possibly shared with the store's aiohttp transport) and a ``Walk`` say.
    """

    def __init__(
        self,
        addrs: Sequence[str],
        *,
        policy: RetryPolicy | None = None,
        wait_seconds: float = 10.0,
        pause_seconds: float = 0.1,
        ring: NodeRing | None = None,
    ) -> None:
        super().__init__()
        self.ring = ring or NodeRing(addrs, pause_seconds=pause_seconds)
        self.addrs = self.ring.addrs
        self.policy = policy or RetryPolicy()
        self.wait_seconds = wait_seconds

    @property
    def preferred(self) -> str:
        """The node asked first right now."""
        return self.ring.preferred

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        method, url = _text(method), _text(url)
        path = self._path(url)
        if path is None or len(self.addrs) == 1:
            return super().request(method, url, *args, **kwargs)
        # A standby's redirect is handled here (another node is asked), never followed blindly to a dead leader.
        kwargs["allow_redirects"] = False
        if self.ring.lookup_due():
            self._find_active(kwargs.get("timeout"))
        return self._attempt(method, path, args, kwargs)

    def _attempt(self, method: str, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> requests.Response:
        body = kwargs.get("json")
        walk = Walk(self.ring, replay_safe=self.policy.replay_safe(method, path, body), wait_seconds=self.wait_seconds)
        last_error: Exception | None = None
        last_response: requests.Response | None = None
        failure: Failure | None = None
        for index, pause in walk:
            if pause:
                time.sleep(pause)
            node = self.addrs[index]
            try:
                response = super().request(method, node + path, *args, **kwargs)
            except requests.RequestException as exc:
                failure = classify_exception(exc)
                last_error, last_response = exc, None
            else:
                text = response.text if response.status_code == 500 else ""
                failure = classify_response(path, response.status_code, text)
                if failure is None:
                    if walk.lost and response.status_code == 400:
                        response = self._landed_or(response, method, path, body, node, kwargs)
                    walk.served(index)
                    return response
                last_error, last_response = None, response
            if not walk.failed(index, failure, method, path):
                break
        return self._give_up(last_response, last_error, walk.lost or failure is Failure.LOST)

    def _landed_or(
        self,
        refused: requests.Response,
        method: str,
        path: str,
        body: Any,
        node: str,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        """After a lost check-and-set write, a check-and-set refusal may mean the lost attempt landed: look."""
        read_path = self.policy.cas_read_path(method, path, body)
        if read_path is None or not cas_refused(refused.text):
            return refused
        read_kwargs = {k: v for k, v in kwargs.items() if k not in ("json", "data")}
        try:
            stored = super().request("GET", node + read_path, **read_kwargs)
        except requests.RequestException:
            return refused
        answer = landed_write(body, stored.json()) if stored.status_code == 200 else None
        if answer is None:
            return refused
        log.warning("Vault: a lost write to %s had landed; reporting it as done", path)
        return _json_response(stored, answer)

    def _give_up(
        self, response: requests.Response | None, error: Exception | None, lost: bool = False
    ) -> requests.Response:
        if lost:
            # An attempt was sent and its answer lost: whatever the later attempts met, it may have been carried out.
            raise LostInFlight("a Vault call was sent and no node answered it") from error
        if response is not None:
            return response  # hvac turns it into its exception (VaultDown for 503, ...)
        if error is not None:
            raise error
        raise NoNodeAvailable("no Vault node could serve the request")

    def _find_active(self, timeout: Any) -> None:
        """Ask each node's ``sys/health`` which one is active; prefer it."""
        probe = min(float(timeout), 1.0) if isinstance(timeout, int | float) else 1.0
        for index, node in enumerate(self.addrs):
            try:
                health = super().request("GET", f"{node}/v1/sys/health", timeout=probe, allow_redirects=False)
            except requests.RequestException:
                continue
            if health.status_code == 200:
                self.ring.found_active(index)
                return

    def _path(self, url: str) -> str | None:
        for node in self.addrs:
            if url.startswith(node + "/"):
                return url[len(node) :]
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _json_response(template: requests.Response, payload: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers.update(template.headers)
    response._content = jsonlib.dumps(payload).encode()
    response.url = template.url
    response.request = template.request
    return response


def mount_pools(session: requests.Session, *, nodes: int, pool_size: int) -> None:
    """One HTTP pool per node, each sized for every worker thread (no call waits for, or throws away, a connection)."""
    http = requests.adapters.HTTPAdapter(pool_connections=max(nodes, 1), pool_maxsize=pool_size, pool_block=True)
    session.mount("http://", http)
    session.mount("https://", http)
