"""A per-worker cap on reads that scan raw events over a long span.

Rollups answer most questions from a few thousand rows; a question they cannot answer (or a
seed bucket width no rollup divides) reads raw events, which over months is millions of rows
and seconds of a database core. READ_RAW_CONCURRENCY such reads run at once per worker; the
next waits READ_RAW_WAIT_SECONDS for a slot, then is a 503 with Retry-After (ReadsBusy). A raw
sliver at a range edge (a few minutes the rollups' grain does not cover) is cheap and does not
count: only raw spans longer than READ_RAW_MIN_SECONDS in total do.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import AsyncIterator, Iterable

from ..db import ReadsBusy
from .planner import Plan


def raw_span(plans: Iterable[Plan]) -> timedelta:
    """The time the raw pieces of these plans cover, summed over every source they read."""
    total = timedelta(0)
    for p in plans:
        for src in p.sources().values():
            total += sum((pc.hi - pc.lo for pc in src.pieces if pc.table is None), timedelta(0))
    return total


class RawGate:
    def __init__(self, limit: int, wait_s: float, min_seconds: float) -> None:
        self.limit = max(1, limit)
        self.wait_s = max(0.0, wait_s)
        self.min_span = timedelta(seconds=max(0.0, min_seconds))
        self._slots = asyncio.Semaphore(self.limit)
        self.refused = 0

    def heavy(self, span: timedelta) -> bool:
        return span > self.min_span

    @asynccontextmanager
    async def slot(self, heavy: bool) -> AsyncIterator[None]:
        """Holds a slot while a heavy read runs (a light one passes straight through)."""
        if not heavy:
            yield
            return
        try:
            async with asyncio.timeout(self.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            self.refused += 1
            raise ReadsBusy(
                f"{self.limit} reads of raw events over long ranges are already running in this "
                "worker; retry shortly, or ask a question the rollups answer (a range aligned to "
                "whole hours or days, fewer filter values, without include_bots).") from None
        try:
            yield
        finally:
            self._slots.release()
