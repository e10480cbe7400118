"""Group commit for single events.

Requests put their event on a bounded queue and wait. One collector task takes what has
arrived (up to `batch_max` events, waiting at most `wait_ms` for more), writes it with one COPY
and one COMMIT, and only then answers every waiting request. A full queue is refused at once
(the HTTP layer answers 503 + Retry-After) instead of growing memory.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..db import DatabaseUnavailable, connection
from .pipeline import EventRecord
from .repository import insert_events, split_duplicates

log = logging.getLogger("analytics.writer")


class WriterOverloaded(Exception):
    """The queue is full; the client should retry later."""


class WriterStopped(Exception):
    """The writer is shutting down and takes no new events."""


@dataclass
class _Pending:
    records: Sequence[EventRecord]
    future: asyncio.Future = field(repr=False)


@dataclass
class WriterStats:
    flushes: int = 0
    events: int = 0
    failures: int = 0
    last_flush_ms: float = 0.0


class EventWriter:
    def __init__(self, pool: AsyncConnectionPool, *, batch_max: int = 500, wait_ms: float = 2.0,
                 queue_max: int = 10_000, max_inflight: int = 2) -> None:
        self.pool = pool
        self.batch_max = max(1, batch_max)
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max(1, queue_max))
        self._inflight = asyncio.Semaphore(max(1, max_inflight))
        self._flushes: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._accepting = False
        self.stats = WriterStats()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="event-writer")

    async def stop(self) -> None:
        """Stop taking events, write everything already accepted, answer its requests."""
        self._accepting = False
        if self._task is not None:
            await self._queue.put(_Pending((), asyncio.get_running_loop().create_future()))  # wake-up
            await self._task
            self._task = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    # -- producer side ---------------------------------------------------------------------
    async def submit(self, records: Sequence[EventRecord]) -> list[bool]:
        """Wait until `records` are committed; return, per record, whether it was new."""
        if not self._accepting:
            raise WriterStopped()
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(records, fut))
        except asyncio.QueueFull:
            raise WriterOverloaded() from None
        return await fut

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- consumer side ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first] if first.records else []
            n = len(first.records)
            deadline = time.monotonic() + self.wait_s
            stopping = not self._accepting
            while n < self.batch_max:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or stopping:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if item.records:
                    batch.append(item)
                    n += len(item.records)
            if batch:
                await self._inflight.acquire()
                task = asyncio.create_task(self._flush(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
            if not self._accepting and self._queue.empty():
                return

    async def _flush(self, batch: list[_Pending]) -> None:
        records = [r for p in batch for r in p.records]
        t0 = time.perf_counter()
        try:
            async with connection(self.pool) as conn:
                async with conn.transaction():
                    stored = await insert_events(conn, records)
            # Committed: now, and only now, answer.
            flags = split_duplicates(records, stored)
            i = 0
            for p in batch:
                k = len(p.records)
                if not p.future.done():
                    p.future.set_result(flags[i:i + k])
                i += k
            self.stats.flushes += 1
            self.stats.events += len(records)
            self.stats.last_flush_ms = (time.perf_counter() - t0) * 1000
        except (DatabaseUnavailable, psycopg.OperationalError) as exc:
            self.stats.failures += 1
            self._fail(batch, DatabaseUnavailable())
            log.warning("flush of %d events failed: database unavailable (%s)",
                        len(records), type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - answer every waiter, whatever happened
            self.stats.failures += 1
            self._fail(batch, exc)
            log.exception("flush of %d events failed", len(records))
        finally:
            self._inflight.release()

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
