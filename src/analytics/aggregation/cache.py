"""A small bounded TTL cache for rendered answers (per worker process).

Short-lived on purpose: a dashboard sees a new event within `ttl` seconds. A ttl of 0 turns it
off (benchmarks measure the database path with it off).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Hashable

_MAX_ENTRY_BYTES = 4 * 1024 * 1024


class TTLCache:
    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max(1, max_entries)
        self._data: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key: Hashable) -> bytes | None:
        if not self.enabled:
            return None
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, value = hit
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if not self.enabled or len(value) > _MAX_ENTRY_BYTES:
            return
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
