"""The answer cache (per worker process): bounded in bytes, and single flight.

- Short-lived on purpose: a dashboard sees a new event within `ttl` seconds. A ttl of 0 turns
  the cache off (benchmarks measure the database path with it off); single flight stays on.
- Bounded in bytes (STATS_CACHE_MAX_BYTES), not entries: answers range from 200 bytes to
  megabytes, so a count bound was either useless or a gigabyte. Each entry is charged its body
  plus an estimate of its key (a key holds up to 6 x 100 filter values of 2 KB). cachetools'
  TTLCache evicts expired entries first, then the least recently used.
- Single flight: identical questions that arrive while the first is being answered wait for
  that answer instead of each running the same query (a dashboard opened by many people at
  once, or a client retrying an expensive question).
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Hashable, NamedTuple

from cachetools import TTLCache


class _Entry(NamedTuple):
    body: bytes
    size: int


def _key_bytes(key: Hashable) -> int:
    # repr is a fair, cheap upper estimate of what the key's strings and tuples hold (it runs
    # once per miss, next to a database round trip).
    return len(repr(key)) + 200


class AnswerCache:
    def __init__(self, ttl: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_bytes = max(1, max_bytes)
        self._data: TTLCache = TTLCache(maxsize=self.max_bytes, ttl=max(ttl, 1e-9),
                                        getsizeof=lambda e: e.size)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    @property
    def bytes(self) -> int:
        return int(self._data.currsize)

    def get(self, key: Hashable) -> bytes | None:
        if not self.enabled:
            return None
        hit = self._data.get(key)
        return None if hit is None else hit.body

    def put(self, key: Hashable, value: bytes) -> None:
        if not self.enabled:
            return
        entry = _Entry(value, len(value) + _key_bytes(key))
        if entry.size > self.max_bytes:
            return  # cachetools would refuse it too; one answer never takes the whole budget
        self._data[key] = entry

    def __len__(self) -> int:
        return len(self._data)


class SingleFlight:
    """Runs one `compute()` per key at a time; concurrent callers with that key share it."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future] = {}
        self.shared = 0  # answers handed to a caller that did not run the query

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[bytes]]) -> tuple[bytes, bool]:
        """(answer, shared): shared is True when another caller's query answered."""
        fut = self._running.get(key)
        if fut is not None:
            self.shared += 1
            # shield: a follower that gives up (client gone) must not cancel the others' answer
            return await asyncio.shield(fut), True
        fut = asyncio.ensure_future(compute())
        self._running[key] = fut
        fut.add_done_callback(lambda f: self._done(key, f))
        return await asyncio.shield(fut), False

    def _done(self, key: Hashable, fut: asyncio.Future) -> None:
        if self._running.get(key) is fut:
            del self._running[key]
        if not fut.cancelled():
            fut.exception()  # retrieved here, so an answer nobody waits for any more logs nothing

    def __len__(self) -> int:
        return len(self._running)
