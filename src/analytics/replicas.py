"""Which server answers a read: a streaming replica from DATABASE_READ_URLS, or the primary.

Stats reads (and seed 004's aggregate, and exports) may be answered by PostgreSQL streaming
replicas; everything that writes or must see its own writes stays on the primary: the event
writer, migrations, retention, rollup rebuilds, `GET /api/events/{id}/` (a client reads back
what it just posted) and `/readyz`.

- **Round robin** over the usable replicas; the primary when none is usable.
- **Health-checked** by one background task per worker, every READ_HEALTH_INTERVAL_SECONDS, on
  a connection of its own (the read pool's connections stay for reads). A replica is usable when
  it answers, is in recovery (a promoted or mistyped server is not a replica, and reading from
  it could be a split brain), and its replay lag is at most READ_MAX_LAG_SECONDS.
- **Replay lag** as the replica sees it: 0 when it has replayed all the WAL it received and its
  WAL receiver is running (caught up; `now() - pg_last_xact_replay_timestamp()` alone would grow
  on an idle primary, which commits nothing new to replay); otherwise the time since the last
  transaction it replayed was committed on the primary, an upper bound. Unknown (no
  transaction replayed since it started, and not caught up) counts as too far behind.
- **A failure is not a 5xx**: a read whose replica cannot be reached (connection refused, cut
  mid-query) or cancelled by a recovery conflict is run again on the primary at once, and the
  replica is skipped until the next check says it is back. A replica that cannot lend a
  connection within REPLICA_CHECKOUT_S is treated the same way (down, or too busy).

How readers use it (`app.state.reads`, one per worker): one-shot reads call
`reads.run(fn)`, where `fn(target)` does the whole read on `target.pool` (the stats service, the
seed aggregate); a streaming read (an export) takes `async with reads.connection() as (conn,
target)`, which falls back to the primary only if the replica cannot lend a connection.

What an answer guarantees (stated in README.md): every answer is computed in one snapshot of
one server, named in its `meta.served_by` with that server's `meta.replay_lag_seconds` at the
last check; on the primary, rollups are exact as of acknowledgement; on a replica, exact as of
its replay point (at most READ_MAX_LAG_SECONDS + READ_HEALTH_INTERVAL_SECONDS behind). The
answer cache and single flight store and share whole answers, never parts of two servers'.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .config import Settings
from .db import DatabaseUnavailable, connection, make_pool

log = logging.getLogger("analytics.replicas")

T = TypeVar("T")

# How long a read waits for a replica's connection before the primary answers it instead.
REPLICA_CHECKOUT_S = 1.0

# One round trip: is it a replica, is its WAL receiver running, has it replayed all it received,
# and how long ago was the last transaction it replayed committed.
_CHECK = ("SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM pg_stat_wal_receiver), "
          "pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn(), "
          "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8")


@dataclass(eq=False)
class ReadTarget:
    """One server reads can go to. `name` is what answers and logs show: never the URL."""

    name: str
    pool: AsyncConnectionPool
    replica: bool
    url: str = field(default="", repr=False)
    healthy: bool = False
    lag_s: float | None = None  # replay lag at the last check; 0 on the primary
    reason: str = "not checked yet"
    checked_at: float = 0.0
    ready: Any = None  # per-server cache of the readers (aggregation.service.ready_of)
    _probe: psycopg.AsyncConnection | None = field(default=None, repr=False)


def _rounded(lag: float | None) -> float | None:
    return None if lag is None or math.isinf(lag) else round(lag, 3)


def replay_lag(in_recovery: bool, receiving: bool, caught_up: bool, since_replay: float | None) -> float | None:
    """The replica's replay lag in seconds (see the module docstring); None: not a replica."""
    if not in_recovery:
        return None
    if receiving and caught_up:
        return 0.0
    return math.inf if since_replay is None else max(0.0, since_replay)


class ReadRouter:
    def __init__(self, primary_pool: AsyncConnectionPool, replicas: list[ReadTarget] | None = None, *,
                 max_lag_s: float = 10.0, interval_s: float = 2.0, check_timeout_s: float = 2.0) -> None:
        self.primary = ReadTarget("primary", primary_pool, replica=False, healthy=True, lag_s=0.0, reason="ok")
        self.replicas = list(replicas or [])
        self.max_lag_s = max_lag_s
        self.interval_s = max(0.1, interval_s)
        self.check_timeout_s = check_timeout_s
        self._turn = itertools.count()
        self._task: asyncio.Task | None = None
        self.fallbacks = 0  # reads a replica failed and the primary answered

    @classmethod
    def from_settings(cls, settings: Settings, primary_pool: AsyncConnectionPool) -> "ReadRouter":
        replicas = [
            ReadTarget(f"replica-{i}", make_pool(settings, name=f"reader-replica-{i}", url=str(url),
                                                 max_size=settings.db_read_pool_size,
                                                 statement_timeout_ms=settings.read_statement_timeout_ms,
                                                 timeout=min(settings.db_timeout, REPLICA_CHECKOUT_S)),
                       replica=True, url=str(url))
            for i, url in enumerate(settings.database_read_urls, start=1)]
        return cls(primary_pool, replicas, max_lag_s=settings.read_max_lag_s,
                   interval_s=settings.read_health_interval_s,
                   check_timeout_s=max(1.0, min(settings.db_timeout, 5.0)))

    # -- choosing --------------------------------------------------------------------------
    def usable(self, t: ReadTarget) -> bool:
        return t.healthy and t.lag_s is not None and t.lag_s <= self.max_lag_s

    def choose(self) -> ReadTarget:
        """The next usable replica in turn, or the primary."""
        ok = [t for t in self.replicas if self.usable(t)]
        return ok[next(self._turn) % len(ok)] if ok else self.primary

    async def run(self, fn: Callable[[ReadTarget], Awaitable[T]]) -> T:
        """fn(target) on the chosen server; on the primary again if a replica fails it."""
        target = self.choose()
        if not target.replica:
            return await fn(target)
        try:
            return await fn(target)
        except DatabaseUnavailable as exc:
            self._failed(target, exc)
        return await fn(self.primary)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[tuple[psycopg.AsyncConnection, ReadTarget]]:
        """A read connection and the server it is on. Falls back to the primary when the chosen
        replica cannot lend one; a failure after that is the caller's (a stream cannot restart
        elsewhere). For one-shot reads prefer run(), which also retries a failed query."""
        target = self.choose()
        async with AsyncExitStack() as stack:
            try:
                conn = await stack.enter_async_context(connection(target.pool))
            except DatabaseUnavailable as exc:
                if not target.replica:
                    raise
                self._failed(target, exc)
                target = self.primary
                conn = await stack.enter_async_context(connection(target.pool))
            yield conn, target

    def _failed(self, t: ReadTarget, exc: BaseException) -> None:
        self.fallbacks += 1
        if isinstance(exc.__cause__, psycopg.errors.TransactionRollback):
            return  # a recovery conflict cancelled this query; the replica itself is fine
        if t.healthy:
            log.warning("read replica failed a read, skipping it until it checks healthy",
                        extra={"replica": t.name, "error": type(exc.__cause__ or exc).__name__})
        t.healthy, t.reason = False, "failed a read"

    # -- health checks ---------------------------------------------------------------------
    async def open(self) -> None:
        for t in self.replicas:
            await t.pool.open(wait=False)
        if self.replicas:
            self._task = asyncio.create_task(self._loop(), name="read-replica-checks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for t in self.replicas:
            if t._probe is not None:
                await t._probe.close()
            await t.pool.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(t) for t in self.replicas))
            await asyncio.sleep(self.interval_s)

    async def check(self, t: ReadTarget) -> None:
        """Measure one replica now and update whether reads may use it."""
        try:
            async with asyncio.timeout(self.check_timeout_s):
                if t._probe is None or t._probe.closed:
                    t._probe = await psycopg.AsyncConnection.connect(
                        t.url, autocommit=True, connect_timeout=max(1, int(self.check_timeout_s)),
                        application_name="analytics-api-replica-check")
                cur = await t._probe.execute(_CHECK)
                lag = replay_lag(*await cur.fetchone())
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if t._probe is not None:
                await t._probe.close()
                t._probe = None
            self._set(t, False, None, f"unreachable ({type(exc).__name__})")
            return
        if lag is None:
            self._set(t, False, None, "not a replica (not in recovery)")
        elif lag > self.max_lag_s:
            self._set(t, True, lag, f"lagging more than {self.max_lag_s:g} s")
        else:
            self._set(t, True, lag, "ok")

    def _set(self, t: ReadTarget, healthy: bool, lag: float | None, reason: str) -> None:
        was = self.usable(t)
        t.healthy, t.lag_s, t.reason, t.checked_at = healthy, lag, reason, time.monotonic()
        now = self.usable(t)
        if was != now:
            (log.info if now else log.warning)(
                "read replica %s" % ("usable" if now else "skipped"),
                extra={"replica": t.name, "reason": reason, "replay_lag_seconds": _rounded(lag)})

    def describe(self) -> list[dict]:
        """For /readyz: each replica, whether reads use it, its lag and why not."""
        return [{"name": t.name, "usable": self.usable(t), "replay_lag_seconds": _rounded(t.lag_s),
                 "reason": t.reason} for t in self.replicas]
