"""The failure throttle's memory of recent failures: what lets a clean caller skip the limiter, and its bound."""

from __future__ import annotations

import pytest
from limits import parse

from service.auth import throttle
from service.auth.throttle import Throttle, TooManyFailures
from service.errors import AuthFailure


def test_a_caller_with_failures_is_checked_and_refused_once_its_window_is_spent() -> None:
    t = Throttle(per_address=parse("2/minute"), per_key=parse("5/minute"))
    t.check("192.0.2.1", None)  # nothing recorded: allowed without reading the windows
    t.failed(AuthFailure.invalid_api_key, "192.0.2.1", "ck_aaaaaaaaaaaaaaaa")
    t.check("192.0.2.1", None)  # one failure left
    t.failed(AuthFailure.invalid_api_key, "192.0.2.1", "ck_aaaaaaaaaaaaaaaa")
    with pytest.raises(TooManyFailures):
        t.check("192.0.2.1", None)
    t.check("192.0.2.2", "ck_aaaaaaaaaaaaaaaa")  # the key has 3 of 5 left; another address is clean


def test_the_memory_of_recent_failures_forgets_expired_entries_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(throttle, "_RECENT_BOUND", 3)
    clock = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: clock[0])
    t = Throttle(per_address=parse("100/second"), per_key=parse("100/second"))
    for n in range(3):
        t.failed(AuthFailure.missing, f"192.0.2.{n}", None)
    clock[0] += 5  # the three have left their one-second window
    t.failed(AuthFailure.missing, "192.0.2.9", None)
    assert list(t._recent) == [("address", "192.0.2.9")]
