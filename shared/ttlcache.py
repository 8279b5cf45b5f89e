"""A bounded least-recently-used cache whose entries expire.

The DNS resolver and the SMTP callouts both remember answers for a while and
must never grow without bound: every entry carries its own time to live, and
when the cache is full the entry used least recently makes room. Expired
entries are dropped when they are read, or pushed out by the LRU order.

The cache is safe to share between the event loop and worker threads (pyspf
resolves through it from a thread); each operation holds a lock for a few
dictionary steps only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most `maxsize` entries, each kept for the TTL it was stored with."""

    def __init__(
        self, maxsize: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if maxsize < 1:
            raise ValueError("a cache holds at least one entry")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The live value for `key`, or None; counts a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= self._clock():
                del self._entries[key]
                entry = None

            if entry is None:
                self.misses += 1
                return None

            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        """Keep `value` for `ttl` seconds; a TTL of zero or less keeps nothing."""
        with self._lock:
            self._entries.pop(key, None)
            if ttl <= 0:
                return

            self._entries[key] = (self._clock() + ttl, value)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
