"""Group commit for single events (and the batch endpoint's batches).

Requests put their events on a queue and wait. One collector task waits for one of
`max_inflight` write slots, then takes what has arrived (up to `batch_max` events, waiting at
most `wait_ms` for more), writes it with one COPY and one COMMIT, and only then answers every
waiting request. Nothing is answered 2xx unless its transaction committed. Under load the
requests that queued while every slot was busy share the next COMMIT, so each COMMIT (and its
rollup upserts, a fixed cost per COMMIT) carries more events.

Failure handling:
- The queue is bounded in events. When it is full, `submit` refuses at once (the HTTP layer
  answers 503 + Retry-After) instead of growing memory.
- Deadlocks and serialization failures (concurrent flushes upserting the same rollup rows) are
  retried a few times with a short jittered backoff: the transaction rolled back, so a retry
  cannot write twice.
- A connection lost during the flush, including during COMMIT, leaves the outcome unknown: the
  waiting requests get DatabaseUnavailable (503). A client retry with the same (id, time) is
  safe, since writes are idempotent.
- Fail fast: when a flush finds the database unreachable (connection refused, lost or timed
  out: see dberrors.py), a circuit opens: new events and those still queued are refused at once
  with DatabaseUnavailable, and a background probe checks the database every
  `probe_interval_s`; the first successful probe closes the circuit, so the same process writes
  again as soon as the database is back. A flush that outlives its deadline opens it only if a
  fresh connection cannot reach the database either (a lock wait is not an outage). Data errors,
  lock waits, statement timeouts and deadlocks after their retries never open it: the requests
  concerned get DatabaseUnavailable (503), the others go on.
- A flush that fails on its data (SQLSTATE classes 22 and 54, check violations: a value the
  database refuses) is bisected: each half of its requests is written again, down to the
  offending request, so the others that shared its COMMIT are stored and answered. The
  offender gets EventRejected (422 naming the field). In a request of several events (the
  batch endpoint: all or nothing) the offending items are found by bisection too, in a
  transaction that is rolled back, and named by index.
- Every wait is bounded by `timeout_s`: a request whose events are not committed by then gets
  DatabaseUnavailable (503; the outcome is unknown), even if the database hangs.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..db import CommitOutcomeUnknown, DatabaseUnavailable
from ..web import metrics
from . import dberrors
from .pipeline import EventRecord
from .repository import forget_stage, insert_events, probe_insert, split_duplicates

log = logging.getLogger("analytics.writer")

# A batch request with many bad items: name this many, then stop looking (each costs a few
# probes of the database).
MAX_REJECTED_REPORTED = 20


class EventRejected(Exception):
    """The database refused some of a request's events for their data (a backstop: validation
    should have refused them). `items`: (index in the request, field or None, message)."""

    def __init__(self, items: list[tuple[int, str | None, str]]) -> None:
        super().__init__(f"{len(items)} event(s) refused")
        self.items = items


class _DataRefused(Exception):
    """A flush failed on its data; `cause` is the database's error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class WriterOverloaded(Exception):
    """The queue is full; the client should retry later."""


class WriterStopped(Exception):
    """The writer is shutting down and takes no new events."""


@dataclass(eq=False)
class _Pending:
    records: Sequence[EventRecord]
    future: asyncio.Future = field(repr=False)
    deadline: float = 0.0  # monotonic; past it, the request is answered 'unavailable'


@dataclass
class WriterStats:
    flushes: int = 0
    visitor_id_dropped: int = 0  # events stored without their visitor id (its cap was full)
    events: int = 0
    failures: int = 0
    retries: int = 0
    splits: int = 0
    rejected: int = 0  # events the database refused for their data (answered 422)
    refused_unavailable: int = 0
    refused_overloaded: int = 0
    timed_out: int = 0
    last_flush_ms: float = 0.0


class EventWriter:
    def __init__(self, pool: AsyncConnectionPool, *, batch_max: int = 500, wait_ms: float = 2.0,
                 queue_max: int = 10_000, max_inflight: int = 2, retries: int = 3,
                 timeout_s: float = 10.0, probe_interval_s: float = 0.5,
                 probe_timeout_s: float = 1.0) -> None:
        self.pool = pool
        self.batch_max = max(1, batch_max)
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.queue_max = max(1, queue_max)
        self.retries = max(0, retries)
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_events = 0
        self._carry: deque[_Pending] = deque()
        self._inflight = asyncio.Semaphore(max(1, max_inflight))
        self._flushes: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        self._reach_check: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._waiting: set[_Pending] = set()  # submitted and not yet answered
        self._accepting = False
        self._unavailable = False  # the circuit: open while the database is known to be down
        self.stats = WriterStats()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="event-writer")
        self._sweeper = asyncio.create_task(self._sweep(), name="event-writer-deadlines")

    async def stop(self) -> None:
        """Stop taking events, write everything already accepted, answer its requests."""
        self._accepting = False
        if self._task is not None:
            self._queue.put_nowait(_Pending((), asyncio.get_running_loop().create_future()))  # wake-up
            await self._task
            self._task = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        for task in (self._probe, self._sweeper, self._reach_check):
            if task is not None:
                task.cancel()
        self._probe = self._sweeper = self._reach_check = None

    # -- producer side ---------------------------------------------------------------------
    async def submit(self, records: Sequence[EventRecord]) -> list[bool]:
        """Wait until `records` are committed; return, per record, whether it was new.

        Raises WriterStopped, WriterOverloaded, DatabaseUnavailable (which includes 'the
        outcome is unknown') or EventRejected; never returns unless the records are committed."""
        if not self._accepting:
            raise WriterStopped()
        if self._unavailable:
            self.stats.refused_unavailable += 1
            raise DatabaseUnavailable()
        n = len(records)
        # A batch larger than the whole queue is still taken when the queue is empty.
        if self._queued_events and self._queued_events + n > self.queue_max:
            self.stats.refused_overloaded += 1
            raise WriterOverloaded()
        fut = asyncio.get_running_loop().create_future()
        pending = _Pending(records, fut, time.monotonic() + self.timeout_s)
        self._queued_events += n
        self._queue.put_nowait(pending)
        self._waiting.add(pending)
        # Bounded by _sweep(), not by a timer per request (asyncio.wait_for cost ~5% of a
        # worker's CPU at full load).
        return await fut

    @property
    def queue_depth(self) -> int:
        """Events accepted and not yet taken into a flush."""
        return self._queued_events

    def stats_dict(self) -> dict:
        """This worker's writer counters (for /readyz and the benchmark)."""
        return {**asdict(self.stats), "last_flush_ms": round(self.stats.last_flush_ms, 2),
                "available": not self._unavailable, "pid": os.getpid()}

    @property
    def available(self) -> bool:
        return not self._unavailable

    async def _sweep(self) -> None:
        """Answer 'unavailable' to every request still waiting past its deadline. Its events
        may still be committed later: the outcome is unknown to the client, hence 503."""
        interval = max(0.01, min(0.25, self.timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            late = 0
            for p in list(self._waiting):
                if p.future.done():
                    self._waiting.discard(p)
                elif now >= p.deadline:
                    p.future.set_exception(CommitOutcomeUnknown())
                    self._waiting.discard(p)
                    late += 1
            if late:
                self.stats.timed_out += late
                log.warning("%d writes not committed within %.1fs; answered unavailable",
                            late, self.timeout_s)

    # -- consumer side ---------------------------------------------------------------------
    async def _next(self, timeout: float | None) -> _Pending | None:
        if self._carry:
            return self._carry.popleft()
        try:
            if timeout is None:
                return await self._queue.get()
            if timeout <= 0:
                return self._queue.get_nowait()
            return await asyncio.wait_for(self._queue.get(), timeout)
        except (asyncio.QueueEmpty, TimeoutError):
            return None

    async def _run(self) -> None:
        while True:
            first = await self._next(None)
            assert first is not None
            # A flush slot first, then the batch: what queued while every slot was busy joins
            # this flush. (Collecting first made a flush of the few events of `wait_s` hold a
            # slot for a whole COMMIT while the rest waited for the next one: smaller flushes,
            # each paying every rollup upsert.) With the circuit open, no slot: what was accepted
            # before it opened is refused at once, not after the flushes in flight.
            slot = not self._unavailable
            if slot:
                await self._inflight.acquire()
            batch = [first] if first.records else []
            n = len(first.records)
            deadline = time.monotonic() + self.wait_s
            while n < self.batch_max:
                stopping = not self._accepting
                remaining = 0.0 if stopping else deadline - time.monotonic()
                item = await self._next(remaining)
                if item is None:
                    break
                if not item.records:
                    continue
                if n + len(item.records) > self.batch_max:
                    self._carry.append(item)  # first of the next flush
                    break
                batch.append(item)
                n += len(item.records)
            self._queued_events -= n  # taken into a flush (counted until now: queue_max bounds them)
            if batch and slot and not self._unavailable:
                task = asyncio.create_task(self._flush_and_release(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
            else:
                if slot:
                    self._inflight.release()
                if batch:  # accepted before the circuit opened: refuse now rather than wait
                    self._fail(batch, DatabaseUnavailable())
            if not self._accepting and self._queue.empty() and not self._carry:
                return

    async def _flush_and_release(self, batch: list[_Pending]) -> None:
        try:
            await self._flush(batch)
        finally:
            self._inflight.release()

    async def _flush(self, batch: list[_Pending]) -> None:
        records = [r for p in batch for r in p.records]
        t0 = time.perf_counter()
        try:
            stored = await self._write(records)
        except _DataRefused as refused:
            await self._isolate(batch, refused.cause)
            return
        except DatabaseUnavailable as exc:
            self._fail_logged(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 - answer every waiter, whatever happened
            self._fail_logged(batch, exc)
            return
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
        metrics.commit(len(records))
        self.stats.last_flush_ms = (time.perf_counter() - t0) * 1000

    async def _isolate(self, batch: list[_Pending], cause: BaseException) -> None:
        """A flush failed on its data: write each half of its requests again (the halves that
        pass are committed and answered), down to the request at fault, which is refused."""
        if len(batch) > 1:
            self.stats.splits += 1
            log.warning("flush of %d requests failed on its data (%s); bisecting", len(batch),
                        type(cause).__name__)
            mid = len(batch) // 2
            await self._flush(batch[:mid])
            await self._flush(batch[mid:])
            return
        (p,) = batch
        if dberrors.visitor_cap_exceeded(cause) and any(r.visitor_id is not None for r in p.records):
            # A visitor id is shared by everyone behind one address with one browser on one site:
            # another client there may have filled its cap. The events are stored without it (in
            # no visit and no unique-visitor count) rather than refused.
            self.stats.visitor_id_dropped += len(p.records)
            log.warning("request of %d events: a visitor id past its cap of stored entries; "
                        "stored without visitor ids", len(p.records))
            p.records = [r._replace(visitor_id=None) for r in p.records]
            await self._flush([p])
            return
        if len(p.records) == 1:
            found = [(0, cause)]
        else:
            try:
                found = await self._find_rejected(p.records)
            except Exception as exc:  # noqa: BLE001 - the database went away meanwhile
                self._fail_logged(batch, self._unavailable_from(exc))
                return
        items = [(i, dberrors.rejected_field(exc, p.records[i]), dberrors.rejection_message(exc))
                 for i, exc in found]
        if not items:
            # No item alone is refused; together they are (a limit on what they add up to).
            items = [(-1, None, dberrors.rejection_message(cause))]
        self.stats.rejected += len(p.records)
        log.warning("request of %d events refused by the database for its data (%s): items %s",
                    len(p.records), type(cause).__name__, [i for i, _, _ in items])
        if not p.future.done():
            p.future.set_exception(EventRejected(items))

    async def _find_rejected(self, records: Sequence[EventRecord]) -> list[tuple[int, BaseException]]:
        """Which of `records` the database refuses, by bisection with savepoints in one
        transaction that is rolled back: nothing is stored (the batch endpoint is all or
        nothing). At most MAX_REJECTED_REPORTED are looked for."""
        found: list[tuple[int, BaseException]] = []

        def is_data(exc: BaseException) -> bool:
            return dberrors.failure_kind(exc) == dberrors.DATA

        async def search(conn, lo: int, hi: int) -> None:
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                if len(found) >= MAX_REJECTED_REPORTED or a == b:
                    continue
                error = await probe_insert(conn, records[a:b], is_data)
                if error is None:
                    continue
                if b - a == 1:
                    found.append((a, error))
                else:
                    await search(conn, a, b)

        async with asyncio.timeout(self.timeout_s):
            async with self.pool.connection() as conn:
                try:
                    async with conn.transaction(force_rollback=True):
                        await search(conn, 0, len(records))
                finally:
                    forget_stage(conn)
        return found

    async def _write(self, records: list[EventRecord]) -> set[tuple]:
        """One transaction, retried on deadlock/serialization failure. Raises _DataRefused when
        the rows are at fault, DatabaseUnavailable for anything else (opening the circuit only
        when the database cannot be reached)."""
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    async with self.pool.connection() as conn:
                        async with conn.transaction():
                            return await insert_events(conn, records)
            except Exception as exc:  # noqa: BLE001 - sorted by dberrors.failure_kind
                kind = dberrors.failure_kind(exc)
                if kind == dberrors.DATA:
                    raise _DataRefused(exc) from exc
                if kind == dberrors.RETRY and attempt < self.retries:
                    attempt += 1
                    self.stats.retries += 1
                    await asyncio.sleep(random.uniform(0.005, 0.02) * 2 ** (attempt - 1))
                    continue
                if kind == dberrors.RETRY:
                    log.warning("flush of %d events: %s after %d retries", len(records),
                                type(exc).__name__, attempt)
                raise self._unavailable_from(exc) from exc

    def _unavailable_from(self, exc: BaseException) -> DatabaseUnavailable:
        """The 503 for a failure that is not the data's; opens the circuit if the database
        cannot be reached, or checks whether it can when a statement outlived its deadline."""
        kind = dberrors.failure_kind(exc)
        if kind == dberrors.DOWN:
            self._open_circuit(exc)
        elif kind == dberrors.STALLED:
            self._check_reachable(exc)
        # Our deadline passed while a statement ran (perhaps the COMMIT): the outcome is unknown.
        unavailable = CommitOutcomeUnknown() if kind == dberrors.STALLED else DatabaseUnavailable()
        unavailable.__cause__ = exc
        return unavailable

    # -- the circuit -----------------------------------------------------------------------
    def _open_circuit(self, exc: BaseException) -> None:
        if not self._unavailable:
            log.warning("database unavailable (%s): refusing writes until it answers again",
                        type(exc).__name__)
        self._unavailable = True
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_up(), name="event-writer-probe")

    def _check_reachable(self, cause: BaseException) -> None:
        """A statement outlived the writer's deadline: a lock wait, a slow database, or a network
        that drops packets. Open the circuit only if a fresh connection (not one of the pool's,
        which may all be waiting) cannot reach the database within the probe timeout."""
        if self._unavailable or (self._reach_check is not None and not self._reach_check.done()):
            return

        async def check() -> None:
            try:
                async with asyncio.timeout(self.probe_timeout_s + 1):
                    conn = await psycopg.AsyncConnection.connect(
                        self.pool.conninfo, connect_timeout=max(1, int(self.probe_timeout_s)),
                        autocommit=True)
                    try:
                        await conn.execute("SELECT 1")
                    finally:
                        await conn.close()
            except (psycopg.Error, TimeoutError, OSError):
                self._open_circuit(cause)

        self._reach_check = asyncio.create_task(check(), name="event-writer-reach-check")

    async def _probe_until_up(self) -> None:
        down_since = time.monotonic()
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                async with asyncio.timeout(self.probe_timeout_s + 1):
                    async with self.pool.connection(timeout=self.probe_timeout_s) as conn:
                        await conn.execute("SELECT 1")
            except (PoolTimeout, psycopg.Error, TimeoutError, OSError):
                continue
            self._unavailable = False
            log.info("database available again; writes resume",
                     extra={"down_s": round(time.monotonic() - down_since, 2)})
            return

    # -- answers ---------------------------------------------------------------------------
    def _fail_logged(self, batch: list[_Pending], exc: BaseException) -> None:
        self.stats.failures += 1
        n = sum(len(p.records) for p in batch)
        if isinstance(exc, DatabaseUnavailable):
            log.warning("flush of %d events failed: database unavailable (%s)", n,
                        type(exc.__cause__).__name__ if exc.__cause__ else "circuit open")
        else:
            log.error("flush of %d events failed: %s", n, type(exc).__name__, exc_info=exc)
        self._fail(batch, exc)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
