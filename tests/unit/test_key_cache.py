"""The API-key cache serves only while its revocation listener is connected, and forgets on every change."""

from __future__ import annotations

import time

from service.auth.key_cache import KeyCache

ROW = {"lookup_id": "abcd", "secret_hash": "0" * 64, "workspace_id": "w", "status": "active"}


def test_nothing_is_cached_or_served_while_not_listening() -> None:
    cache = KeyCache()
    cache.put("abcd", ROW)
    assert cache.get("abcd") is None
    cache.listening = True
    assert cache.get("abcd") is None  # the put above was refused, not kept for later


def test_a_change_notification_evicts_and_a_lost_listener_empties_the_cache() -> None:
    cache = KeyCache()
    cache.listening = True
    cache.put("abcd", ROW)
    cache.put("efgh", {**ROW, "lookup_id": "efgh"})
    assert cache.get("abcd") == ROW

    cache._changed("abcd")
    assert (cache.get("abcd"), cache.get("efgh")) == (None, {**ROW, "lookup_id": "efgh"})

    cache._lost()
    assert cache.listening is False
    cache.listening = True  # even once listening again, nothing from before the loss is served
    assert cache.get("efgh") is None


def test_entries_expire_and_the_oldest_go_first_past_the_bound() -> None:
    cache = KeyCache(ttl=0.05, max_entries=2)
    cache.listening = True
    for lookup in ("a", "b", "c"):
        cache.put(lookup, {**ROW, "lookup_id": lookup})
    assert [cache.get(x) is not None for x in ("a", "b", "c")] == [False, True, True]
    time.sleep(0.06)
    assert cache.get("c") is None
