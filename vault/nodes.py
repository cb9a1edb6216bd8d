"""Several Vault/OpenBao nodes of one HA cluster: which node to call, what a failure means, when to call again.

The policy is a set of pure functions (``parse_addrs``, ``classify_response``, ``classify_exception``,
``replay_safe``, ``cas_of``) so any transport can apply it; ``FailoverSession`` applies it to every call hvac makes.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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


def classify_exception(exc: requests.RequestException) -> Failure:
    """UNREACHABLE when nothing was sent (connection refused, connect timeout, DNS), else LOST."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
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


class FailoverSession(requests.Session):
    """A ``requests.Session`` that sends each call hvac makes to the first node able to serve it.

    hvac joins its ``base_uri`` (the first node) to each path; the session swaps in the node it sends to. The node
    that served last is asked first; after a failure, the active node is looked up again (``sys/health``, not
    audited) so that reads go to the node that holds the newest data rather than to a standby that may lag.
    """

    def __init__(
        self,
        addrs: Sequence[str],
        *,
        policy: RetryPolicy | None = None,
        wait_seconds: float = 10.0,
        pause_seconds: float = 0.1,
    ) -> None:
        super().__init__()
        if not addrs:
            raise ValueError("at least one Vault address is needed")
        self.addrs = tuple(addrs)
        self.policy = policy or RetryPolicy()
        self.wait_seconds = wait_seconds
        self.pause_seconds = pause_seconds
        self._preferred = 0
        self._lock = threading.Lock()
        self._rediscover = len(self.addrs) > 1
        self._rediscover_after = 0.0

    @property
    def preferred(self) -> str:
        """The node asked first right now."""
        return self.addrs[self._preferred]

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        method, url = _text(method), _text(url)
        path = self._path(url)
        if path is None or len(self.addrs) == 1:
            return super().request(method, url, *args, **kwargs)
        # A standby's redirect is handled here (another node is asked), never followed blindly to a dead leader.
        kwargs["allow_redirects"] = False
        if self._rediscover:
            self._find_active(kwargs.get("timeout"))
        return self._attempt(method, path, args, kwargs)

    def _attempt(self, method: str, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> requests.Response:
        body = kwargs.get("json")
        deadline = time.monotonic() + self.wait_seconds
        lost_once = False
        last_error: Exception | None = None
        last_response: requests.Response | None = None
        while True:
            start = self._preferred
            for step in range(len(self.addrs)):
                index = (start + step) % len(self.addrs)
                node = self.addrs[index]
                failure: Failure | None
                try:
                    response = super().request(method, node + path, *args, **kwargs)
                except requests.RequestException as exc:
                    failure = classify_exception(exc)
                    last_error, last_response = exc, None
                else:
                    text = response.text if response.status_code == 500 else ""
                    failure = classify_response(path, response.status_code, text)
                    if failure is None:
                        if lost_once and response.status_code == 400:
                            response = self._landed_or(response, method, path, body, node, kwargs)
                        self._serve_from(index, moved=step > 0)
                        return response
                    last_error, last_response = None, response
                self._rediscover = True
                if failure is Failure.LOST:
                    if lost_once or not self.policy.replay_safe(method, path, body):
                        return self._give_up(last_response, last_error)
                    lost_once = True
                # A lost call is worth a warning (it may have been carried out); refusals are routine in an election.
                level = logging.WARNING if failure is Failure.LOST else logging.INFO
                log.log(level, "Vault node %s: %s on %s %s; trying another node", node, failure.value, method, path)
            if time.monotonic() >= deadline:
                return self._give_up(last_response, last_error)
            time.sleep(self.pause_seconds)

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
        if read_path is None or "check-and-set" not in refused.text:
            return refused
        read_kwargs = {k: v for k, v in kwargs.items() if k not in ("json", "data")}
        try:
            stored = super().request("GET", node + read_path, **read_kwargs)
        except requests.RequestException:
            return refused
        if stored.status_code != 200:
            return refused
        data = stored.json().get("data") or {}
        if data.get("data") != body.get("data"):
            return refused
        log.warning("Vault: a lost write to %s had landed; reporting it as done", path)
        return _json_response(stored, {"data": data.get("metadata") or {}})

    def _give_up(self, response: requests.Response | None, error: Exception | None) -> requests.Response:
        if response is not None:
            return response  # hvac turns it into its exception (VaultDown for 503, ...)
        if error is not None:
            raise error
        raise NoNodeAvailable("no Vault node could serve the request")

    def _serve_from(self, index: int, *, moved: bool) -> None:
        if moved:
            with self._lock:
                self._preferred = index

    def _find_active(self, timeout: Any) -> None:
        """Ask each node's ``sys/health`` which one is active; prefer it. At most every ``pause_seconds``."""
        now = time.monotonic()
        with self._lock:
            if now < self._rediscover_after:
                return
            self._rediscover_after = now + self.pause_seconds
        probe = min(float(timeout), 1.0) if isinstance(timeout, int | float) else 1.0
        for index, node in enumerate(self.addrs):
            try:
                health = super().request("GET", f"{node}/v1/sys/health", timeout=probe, allow_redirects=False)
            except requests.RequestException:
                continue
            if health.status_code == 200:
                with self._lock:
                    moved, self._preferred, self._rediscover = index != self._preferred, index, False
                if moved:
                    log.info("Vault: the active node is now %s", node)
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
