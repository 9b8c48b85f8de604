"""A dict bounded in bytes, for the caches that wire data fills.

Every cache keyed by something a peer sends (header names, header-name
sequences, URIs, host names) must stay small however the peer varies it:
counting entries is not enough when one entry can be 60 KB.  A
:class:`BoundedCache` keeps an entry only when its estimated size is at
most ``max_entry`` bytes and empties itself when the sum would pass
``max_bytes`` (the entries are cheap to recompute; the hot path pays one
comparison per miss and nothing per hit: ``get`` is dict's own).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: what a small str/bytes/tuple costs besides its characters (CPython, 64-bit)
OVERHEAD = 64


class BoundedCache(dict[K, V]):
    __slots__ = ("max_bytes", "max_entry", "used")

    def __init__(self, max_bytes: int, max_entry: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.used = 0

    def put(self, key: K, value: V, size: int) -> None:
        """Remember ``key`` -> ``value`` whose key and value take about
        ``size`` bytes (plus :data:`OVERHEAD`)."""
        size += OVERHEAD
        if size > self.max_entry:
            return
        if self.used + size > self.max_bytes:
            self.clear()
        self[key] = value
        self.used += size  # a replaced entry is counted twice: an overestimate, never an under

    def clear(self) -> None:
        super().clear()
        self.used = 0
