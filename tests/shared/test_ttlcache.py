"""The bounded LRU cache with a TTL per entry."""

from __future__ import annotations

import pytest

from shared.ttlcache import TTLCache


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_exactly_as_long_as_its_ttl() -> None:
    clock = ManualClock()
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.put("a", 1, ttl=5)

    clock.now = 4.99
    alive = cache.get("a")
    clock.now = 5.0
    expired = cache.get("a")

    assert (alive, expired) == (1, None)
    assert len(cache) == 0


def test_a_ttl_of_zero_keeps_nothing_and_drops_the_old_value() -> None:
    cache: TTLCache[str, int] = TTLCache(10)
    cache.put("a", 1, ttl=60)

    cache.put("a", 2, ttl=0)

    assert cache.get("a") is None


def test_a_full_cache_forgets_the_least_recently_used_entry() -> None:
    cache: TTLCache[str, int] = TTLCache(2)
    cache.put("a", 1, ttl=60)
    cache.put("b", 2, ttl=60)
    cache.get("a")

    cache.put("c", 3, ttl=60)

    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_hits_and_misses_are_counted() -> None:
    cache: TTLCache[str, int] = TTLCache(2)
    cache.put("a", 1, ttl=60)

    cache.get("a")
    cache.get("b")
    cache.get("a")

    assert (cache.hits, cache.misses) == (2, 1)


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ValueError):
        TTLCache(0)
