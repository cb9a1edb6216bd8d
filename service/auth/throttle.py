"""Failed authentication: throttled per client address and per API key prefix, logged, and counted.

Every 401 from the auth guard is a failure with its ``AuthFailure`` reason (``service.errors``). Each failure
spends one unit of two moving windows (the ``limits`` library): the client address's
(``CREDENTIALS_AUTH_FAILURES_PER_ADDRESS``) and, for an API key whose format is right, its prefix's (``ck_<lookup>``,
``CREDENTIALS_AUTH_FAILURES_PER_KEY``). While either is spent, every request from that address, or presenting that
prefix, answers 429 with ``Retry-After`` before any credential is checked, the right one included: a key prefix is
known only to its holder and the workspace's admins, and the window is short.

Each failure is logged (reason, address, prefix; never what was presented beyond the public prefix) and counted in
``failures``; the metric ``credentials_auth_failures_total{reason=...}`` is counted by the error handler, for
every 401 and 403, throttled or not.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from service.config import HardeningSettings
from service.errors import AuthFailure, ServiceError

log = logging.getLogger("service.auth.throttle")

_RECENT_BOUND = 10_000
"""Entries of ``Throttle._recent`` before the expired ones are dropped (each failure adds at most two)."""
_KEY_PREFIX = re.compile(r"^(ck_[a-z0-9]{16})_")


class TooManyFailures(ServiceError, status=429):
    """The address or key prefix spent its failed-authentication budget."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed authentication attempts; retry later")
        self.headers = {"Retry-After": str(retry_after)}


def key_prefix(presented: str | None) -> str | None:
    """The public prefix (``ck_<lookup>``) of something shaped like an API key, else None."""
    match = _KEY_PREFIX.match(presented or "")
    return match.group(1) if match else None


@dataclass
class Throttle:
    """The failure windows of one app (in process memory: per process, like uvicorn's other limits)."""

    per_address: RateLimitItem
    per_key: RateLimitItem
    trust_forwarded_for: bool = False
    failures: Counter[AuthFailure] = field(default_factory=Counter)
    _limiter: MovingWindowRateLimiter = field(default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()))
    _recent: dict[tuple[str, str], float] = field(default_factory=dict)
    """(window, address or prefix) -> when its last failure leaves the window. A caller absent from it has spent
    nothing, so ``check`` skips the limiter's two window reads: the request path of every well-behaved caller."""

    @classmethod
    def from_settings(cls, settings: HardeningSettings) -> Throttle:
        return cls(
            per_address=parse(settings.auth_failures_per_address),
            per_key=parse(settings.auth_failures_per_key),
            trust_forwarded_for=settings.trust_forwarded_for,
        )

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The caller's address: the last ``X-Forwarded-For`` entry (the one our proxy added) when trusted."""
        if self.trust_forwarded_for and forwarded_for:
            return forwarded_for.rsplit(",", 1)[-1].strip() or (peer or "unknown")
        return peer or "unknown"

    def check(self, address: str, prefix: str | None) -> None:
        """429 while the address or the key prefix has no failures left."""
        now = time.monotonic()
        if self._recent.get(("address", address), 0.0) <= now and (
            prefix is None or self._recent.get(("key", prefix), 0.0) <= now
        ):
            return
        waits = []
        if not self._limiter.test(self.per_address, "address", address):
            waits.append(self._limiter.get_window_stats(self.per_address, "address", address).reset_time)
        if prefix is not None and not self._limiter.test(self.per_key, "key", prefix):
            waits.append(self._limiter.get_window_stats(self.per_key, "key", prefix).reset_time)
        if waits:
            raise TooManyFailures(max(1, math.ceil(max(waits) - time.time())))

    def failed(self, reason: AuthFailure, address: str, prefix: str | None) -> None:
        now = time.monotonic()
        self._limiter.hit(self.per_address, "address", address)
        self._recent[("address", address)] = now + self.per_address.get_expiry()
        if prefix is not None:
            self._limiter.hit(self.per_key, "key", prefix)
            self._recent[("key", prefix)] = now + self.per_key.get_expiry()
        if len(self._recent) > _RECENT_BOUND:
            self._recent = {k: until for k, until in self._recent.items() if until > now}
        self.failures[reason] += 1
        # safe: the reason, the caller's address and the key's public prefix; never the presented secret or token
        log.warning("authentication failed: reason=%s address=%s key=%s", reason.value, address, prefix or "-")
