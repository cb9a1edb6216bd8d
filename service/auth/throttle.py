"""Failed authentication: throttled per client address and per API key prefix, logged, and counted.

Every 401 from the auth guard is a failure with a ``FailureReason``. Each failure spends one unit of two moving
windows (the ``limits`` library): the client address's (``CREDENTIALS_AUTH_FAILURES_PER_ADDRESS``) and, for an API
key whose format is right, its prefix's (``ck_<lookup>``, ``CREDENTIALS_AUTH_FAILURES_PER_KEY``). While either is
spent, every request from that address, or presenting that prefix, answers 429 with ``Retry-After`` before any
credential is checked, the right one included: a key prefix is known only to its holder and the workspace's
admins, and the window is short.

Each failure is logged (reason, address, prefix; never what was presented beyond the public prefix), counted in
``failures`` and passed to the hooks registered with ``on_failure`` (the metrics module's counter
``credentials_failed_authentications_total{reason=...}`` subscribes there).
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from service.config import HardeningSettings
from service.errors import ServiceError

log = logging.getLogger("service.auth.throttle")

_KEY_PREFIX = re.compile(r"^(ck_[a-z0-9]{16})_")


class FailureReason(enum.StrEnum):
    """Why an authentication failed (the ``reason`` label of the failed-authentication metric)."""

    missing = "missing"
    """No credentials at all."""
    malformed = "malformed"
    """An Authorization header that is not ``Bearer <credentials>``."""
    invalid_api_key = "invalid_api_key"
    """Unknown, wrong, revoked, inactive or expired API key (one reason: the API does not tell them apart)."""
    invalid_token = "invalid_token"  # noqa: S105 (a reason, not a password)
    """A user token that fails verification or has unusable claims."""
    expired_token = "expired_token"  # noqa: S105
    tokens_not_accepted = "tokens_not_accepted"
    """A user token sent to a service configured without user-token keys."""


class TooManyFailures(ServiceError, status=429):
    """The address or key prefix spent its failed-authentication budget."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed authentication attempts; retry later")
        self.headers = {"Retry-After": str(retry_after)}


FailureHook = Callable[[FailureReason], None]
_HOOKS: list[FailureHook] = []


def on_failure(hook: FailureHook) -> None:
    """Call ``hook`` with the reason of every failed authentication, in every app of this process."""
    _HOOKS.append(hook)


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
    failures: Counter[FailureReason] = field(default_factory=Counter)
    _limiter: MovingWindowRateLimiter = field(default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()))

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
        waits = []
        if not self._limiter.test(self.per_address, "address", address):
            waits.append(self._limiter.get_window_stats(self.per_address, "address", address).reset_time)
        if prefix is not None and not self._limiter.test(self.per_key, "key", prefix):
            waits.append(self._limiter.get_window_stats(self.per_key, "key", prefix).reset_time)
        if waits:
            raise TooManyFailures(max(1, math.ceil(max(waits) - time.time())))

    def failed(self, reason: FailureReason, address: str, prefix: str | None) -> None:
        self._limiter.hit(self.per_address, "address", address)
        if prefix is not None:
            self._limiter.hit(self.per_key, "key", prefix)
        self.failures[reason] += 1
        # safe: the reason, the caller's address and the key's public prefix; never the presented secret or token
        log.warning("authentication failed: reason=%s address=%s key=%s", reason.value, address, prefix or "-")
        for hook in _HOOKS:
            hook(reason)
