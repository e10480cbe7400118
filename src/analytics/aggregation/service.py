"""Runs a StatsQuery: plan, SQL in one read-only snapshot, JSON bytes out, TTL cache around it."""
from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import AsyncIterator

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from .. import catalog
from ..db import connection
from ..replicas import ReadRouter, ReadTarget
from ..retention.state import STATE_TABLE as RETENTION_TABLE
from ..retention.state import HORIZONS_TTL_S, Horizons
from ..rollups.ddl import META_TABLE
from ..web import metrics
from ..web.errors import validation_error
from .buckets import iso
from .builder import Builder
from .cache import AnswerCache, SingleFlight
from .guard import RawGate, raw_span
from .planner import KIND_OF_METRIC, BeyondHorizon, Plan, ReadyTables, plan
from .query import MAX_SERIES_ROWS, StatsQuery

_READY_TTL = HORIZONS_TTL_S  # a retention run waits for every worker to re-read its horizons


@dataclass
class Answer:
    body: bytes
    cached: bool
    shared: bool = False  # answered by an identical question's query that was already running

    @property
    def how(self) -> str:
        """The X-Cache header: hit, miss, or shared (single flight)."""
        return "hit" if self.cached else "shared" if self.shared else "miss"


async def begin_read(conn: psycopg.AsyncConnection) -> None:
    """One snapshot for every statement of an answer (call first thing in a transaction)."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def _single_statement(q: StatsQuery) -> bool:
    """Answers of one statement need no transaction: a statement sees one snapshot."""
    return not (q.kind == "timeseries" and q.group_by) and q.compare is None


@asynccontextmanager
async def read_snapshot(conn: psycopg.AsyncConnection, many: bool) -> AsyncIterator[None]:
    """A repeatable-read transaction for answers of several statements; autocommit (two round
    trips fewer) for answers of one."""
    if many:
        async with conn.transaction():
            await begin_read(conn)
            yield
        return
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        await conn.set_autocommit(False)


class ReadyRollups:
    """Which rollup tables are complete (rollup_meta.ready), and the retention horizons, re-read
    every few seconds (a retention run waits longer than that before it drops anything)."""

    def __init__(self) -> None:
        self._names: ReadyTables = ReadyTables()
        self._at = -1e9

    async def current(self, pool: AsyncConnectionPool) -> set[str]:
        """The names, borrowing a connection only when they are due to be re-read."""
        if time.monotonic() - self._at > _READY_TTL:
            async with connection(pool) as conn:
                async with read_snapshot(conn, many=False):
                    return await self.get(conn)
        return self._names

    async def get(self, conn: psycopg.AsyncConnection) -> set[str]:
        if time.monotonic() - self._at > _READY_TTL:
            cur = await conn.execute(sql.SQL("""SELECT ARRAY(SELECT name FROM {} WHERE ready),
                    h.raw_horizon, h.rollup_horizon
                FROM (SELECT 1) one LEFT JOIN {} h ON true""").format(
                sql.Identifier(META_TABLE), sql.Identifier(RETENTION_TABLE)))
            names, raw, rollup = await cur.fetchone()
            self._names = ReadyTables(names, Horizons(raw, rollup))
            self._at = time.monotonic()
        return self._names


def ready_of(target: ReadTarget) -> ReadyRollups:
    """Each server's own ready set: a replica that has not replayed a rebuild yet must not be
    asked for the table that rebuild filled."""
    if target.ready is None:
        target.ready = ReadyRollups()
    return target.ready


def _served(body: bytes, target: ReadTarget) -> bytes:
    """The answer with the server that computed it first in its meta (the body is built in
    _run; every answer starts with its meta object)."""
    head = b'{"meta":{'
    assert body.startswith(head)
    lag = 0.0 if not target.replica else round(target.lag_s or 0.0, 3)
    return head + json.dumps({"served_by": target.name, "replay_lag_seconds": lag})[1:-1].encode() + b"," \
        + body[len(head):]


# Said in every answer that has unique_visitors: what the number is, and is not.
VISITORS_NOTE = ("distinct visitor ids; an id is a hash of address, user agent and site with a salt "
                 "that changes every UTC day, so over more than a day this is the sum of daily uniques "
                 "(a person seen on two days counts twice)")


def _meta(q: StatsQuery, p: Plan, **extra) -> dict:
    sources = {m: getattr(p, KIND_OF_METRIC[m]).label for m in q.metrics}
    tz = q.tz
    meta = {
        "interval": str(q.interval) if q.interval else None,
        "timezone": q.tz_name,
        "start": iso(q.start, tz),
        "end": iso(q.end, tz),
        "group_by": list(q.group_by),
        "metrics": list(q.metrics),
        "filters": q.filters.as_dict(),
        "source": "+".join(dict.fromkeys(s for v in sources.values() for s in v.split("+"))),
        "sources": sources,
    }
    if q.kind != "timeseries" or q.group_by:
        meta.update(order_by=f"{q.order_by}:{'desc' if q.descending else 'asc'}", limit=q.limit, offset=q.offset)
    if "unique_visitors" in q.metrics:
        meta["unique_visitors"] = VISITORS_NOTE
    meta.update(extra)
    return meta


def _plans(q: StatsQuery, ready: set[str]) -> list[Plan]:
    """The plans of every statement an answer runs that can read raw events."""
    plans = [_plan(q, ready)]
    if q.compare == "previous":
        plans.append(_plan(_previous(q), ready, field="compare"))
    return plans


def _plan(q: StatsQuery, ready: set[str], field: str = "start") -> Plan:
    """plan(), with a question that needs data retention dropped as a 422 naming `field`."""
    try:
        return plan(q, ready)
    except BeyondHorizon as exc:
        raise validation_error(field, str(exc), rule="retention_horizon") from None


def _horizon_meta(ready: set[str], tz) -> dict:
    """The instants before which raw events and rollups are gone (null: none dropped)."""
    h = getattr(ready, "horizons", None) or Horizons()
    return {"raw_horizon": iso(h.raw, tz) if h.raw else None,
            "rollup_horizon": iso(h.rollup, tz) if h.rollup else None}


def _previous(q: StatsQuery) -> StatsQuery:
    """The period of the same length just before (build_query checked it is in range)."""
    span = q.end - q.start
    return replace(q, start=q.start - span, end=q.start, compare=None, limit=None, offset=0)


class StatsService:
    def __init__(self, pool: AsyncConnectionPool, cache: AnswerCache, raw_gate: RawGate | None = None,
                 reads: ReadRouter | None = None) -> None:
        self.pool = pool  # the primary's read pool
        self.cache = cache
        self.reads = reads or ReadRouter(pool)  # which server answers (replicas.py)
        self.ready = ready_of(self.reads.primary)
        self.raw_gate = raw_gate or RawGate(2, 1.0, 3600)
        self.flight = SingleFlight()

    async def answer(self, q: StatsQuery) -> Answer:
        key = q.cache_key()
        hit = self.cache.get(key)
        if hit is not None:
            metrics.stats_cache("hit")
            return Answer(hit, True)
        body, shared = await self.flight.run(key, lambda: self._compute(key, q))
        metrics.stats_cache("shared" if shared else "miss")
        return Answer(body, False, shared)

    async def _compute(self, key, q: StatsQuery) -> bytes:
        # One server computes the whole answer (a replica, or the primary if it fails).
        body = await self.reads.run(lambda target: self._compute_on(target, q))
        self.cache.put(key, body)
        return body

    async def _compute_on(self, target: ReadTarget, q: StatsQuery) -> bytes:
        # Planned before a connection is taken: a read that must wait for a raw slot (or is
        # refused one) holds no connection meanwhile.
        ready = await ready_of(target).current(target.pool)
        plans = _plans(q, ready)
        async with self.raw_gate.slot(self.raw_gate.heavy(raw_span(plans))):
            async with connection(target.pool) as conn:
                async with read_snapshot(conn, not _single_statement(q)):
                    body = await self._run(conn, q, ready, plans)
        metrics.stats_sources(plans)
        return _served(body, target)

    async def _rows(self, conn, q: StatsQuery, ready: set[str], groups=None,
                    p: Plan | None = None) -> tuple[str, int, Plan]:
        p = p or _plan(q, ready)
        b = Builder(q, groups)
        # Never a prepared statement: a generic plan knows nothing of the arrays and ranges passed
        # in and picked nested loops that took seconds; planning afresh costs under a millisecond.
        cur = await conn.execute(b.statement(p), b.params, prepare=False)
        text, n = await cur.fetchone()
        return text, n, p

    async def _run(self, conn, q: StatsQuery, ready: set[str], plans: list[Plan]) -> bytes:
        """`plans`: _plans(q, ready), made already (for the raw-read cap)."""
        if q.kind == "timeseries":
            if q.group_by:
                # The series of the top `limit` groups (after `offset`) by order_by over the range.
                ranking = replace(q, kind="breakdown", edges=())
                text, total, _ = await self._rows(conn, ranking, ready)
                groups = [tuple(r[d] for d in q.group_by) for r in json.loads(text)]
                if len(groups) * len(q.edges) > MAX_SERIES_ROWS:
                    raise validation_error("limit", f"{len(groups)} groups x {len(q.edges)} buckets is more "
                                                    f"than {MAX_SERIES_ROWS} rows; lower limit or coarsen the interval",
                                           rule="too_many_rows")
                results, n, p = await self._rows(conn, q, ready, groups, plans[0])
                meta = _meta(q, p, buckets=len(q.edges), total_groups=total)
            else:
                results, n, p = await self._rows(conn, q, ready, p=plans[0])
                meta = _meta(q, p, buckets=len(q.edges))
        elif q.kind == "breakdown":
            results, total, p = await self._rows(conn, q, ready, p=plans[0])
            meta = _meta(q, p, total_groups=total)
        else:
            results, total, p = await self._rows(conn, q, ready, p=plans[0])
            meta = _meta(q, p, total_groups=total if q.group_by else None)
            if q.compare == "previous":
                prev_q = _previous(q)
                prev_text, _, prev_plan = await self._rows(conn, prev_q, ready, p=plans[1])
                results = _attach_previous(q, results, prev_text)
                meta.update(compare="previous", previous={
                    "start": iso(prev_q.start, q.tz), "end": iso(prev_q.end, q.tz),
                    "sources": {m: getattr(prev_plan, KIND_OF_METRIC[m]).label for m in q.metrics}})
        meta.update(_horizon_meta(ready, q.tz))
        return b'{"meta":' + json.dumps(meta).encode() + b',"results":' + results.encode() + b"}"


def _attach_previous(q: StatsQuery, current: str, previous: str) -> str:
    """Each current row gets `previous`: the same metrics for the same group one period earlier."""
    prev_rows = {tuple(r.get(d) for d in q.group_by): r for r in json.loads(previous)}
    out = []
    for row in json.loads(current):
        before = prev_rows.get(tuple(row.get(d) for d in q.group_by))
        row["previous"] = {m: (before[m] if before else catalog.metric(m).zero) for m in q.metrics}
        out.append(row)
    return json.dumps(out)
