"""Answers seed 004's bucketed aggregate (bucket, page, operating_system, avg_duration, count).

Same rows as the raw `time_bucket ... GROUP BY` over events, read from a (page, os) rollup
whenever the planner finds one whose grain divides the width (time_bucket's default origin,
2000-01-03 and 2000-01-01 for months, is aligned to every grain).

The JSON is written by PostgreSQL, byte for byte what FastAPI renders for the seed's
`List[EventBucketSchema]` (pydantic's datetime form, Python's float repr, compact separators,
UTF-8): turning 7,500 rows into Python objects and back into JSON took longer than the query.

Retention: once raw events were dropped, a width no rollup answers is a 422 naming `duration`
(raw events would count only what is left); rollup rows before the rollup horizon are gone, so
a bucket that starts before it (it would be partial) is left out of the answer.
"""
from __future__ import annotations

from datetime import timedelta

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ..db import connection
from ..replicas import ReadRouter, ReadTarget
from ..retention.state import NO_HORIZONS
from ..web.errors import validation_error
from .guard import RawGate
from .intervals import Interval
from .planner import seed_table
from .service import ReadyRollups, read_snapshot, ready_of

# The seed endpoint has no time range: when no rollup fits, it scans every raw event.
_ALL_TIME = timedelta(days=366 * 1000)

_RAW_ROWS = """
SELECT time_bucket(%(width)s::interval, time) AS bucket,
       page,
       os AS operating_system,
       avg(duration)::float8 AS avg_duration,
       count(*) AS count
FROM events
WHERE page = ANY(%(pages)s)
GROUP BY 1, 2, 3
"""
# Seed 004's own statement (the benchmark's raw side).
RAW_SEED_QUERY = _RAW_ROWS + "ORDER BY 1, 2, 3\n"

# avg(int) is numeric sum / count, so this is the same float8 as the raw query's.
_ROLLUP_ROWS = """
SELECT time_bucket(%(width)s::interval, bucket) AS bucket,
       page,
       os AS operating_system,
       (sum(dur_sum)::numeric / nullif(sum(dur_n), 0))::float8 AS avg_duration,
       sum(events)::bigint AS count
FROM {table}
WHERE page = ANY(%(pages)s)
GROUP BY 1, 2, 3
HAVING %(kept_from)s::timestamptz IS NULL OR time_bucket(%(width)s::interval, bucket) >= %(kept_from)s
"""

# pydantic's datetime: the session's local time, '.ffffff' only when there are microseconds,
# 'Z' for a zero offset and '+HH:MM' otherwise.
_BUCKET_JSON = """'"' || to_char(r.bucket, 'YYYY-MM-DD"T"HH24:MI:SS')
    || CASE WHEN mod(date_part('microseconds', r.bucket)::bigint, 1000000) = 0 THEN ''
            ELSE to_char(r.bucket, '.US') END
    || CASE to_char(r.bucket, 'TZH:TZM') WHEN '+00:00' THEN 'Z' ELSE to_char(r.bucket, 'TZH:TZM') END
    || '"'"""

# Python's float repr: float8 text output is the same shortest round-trip digits
# (extra_float_digits >= 1, set on every connection), except that Python writes whole numbers
# below 1e16 with '.0' and without an exponent. (Averages of int4 durations stay far below.)
_FLOAT_JSON = """CASE WHEN r.avg_duration IS NULL THEN 'null'
     WHEN r.avg_duration = trunc(r.avg_duration) AND abs(r.avg_duration) < 1e16
          THEN r.avg_duration::bigint::text || '.0'
     ELSE r.avg_duration::text END"""

# One JSON object per row, in the seed's order; Python only joins them. (A string_agg with
# ORDER BY sorted the wide rows inside the aggregate: slower, and on PostgreSQL 16+ the
# alternative, an aggregate over a sorted subquery, may run in parallel and lose the order.)
_RENDER = """SELECT '{{"bucket":' || """ + _BUCKET_JSON + """
    || ',"page":' || to_json(r.page)::text
    || ',"operating_system":' || coalesce(to_json(r.operating_system)::text, 'null')
    || ',"avg_duration":' || """ + _FLOAT_JSON + """
    || ',"count":' || r.count::text || '}}'
FROM ({inner}) r
ORDER BY r.bucket, r.page, r.operating_system"""


def seed_json_query(table: str | None) -> sql.Composable:
    """The statement that returns the answer's JSON objects, one row each, in order."""
    inner = (sql.SQL(_RAW_ROWS) if table is None else
             sql.SQL(_ROLLUP_ROWS).format(table=sql.Identifier(table)))
    # Sorted before the JSON is written (narrow rows); the outer ORDER BY is then already met.
    # LIMIT: never more than the row cap plus one (which says the cap was passed) leaves the database.
    return sql.SQL(_RENDER).format(inner=inner + sql.SQL("ORDER BY 1, 2, 3")) + sql.SQL("\nLIMIT %(limit)s")


class SeedReader:
    """The answer is bounded: at most `max_rows` rows are ever fetched (LIMIT max_rows + 1); a
    bigger one is a 422 naming `duration`."""

    def __init__(self, pool: AsyncConnectionPool, ready: ReadyRollups | None = None, *,
                 raw_gate: RawGate | None = None, max_rows: int = 100_000,
                 reads: ReadRouter | None = None) -> None:
        self.pool = pool
        self.reads = reads or ReadRouter(pool)  # which server answers (replicas.py)
        if ready is not None and self.reads.primary.ready is None:
            self.reads.primary.ready = ready
        self.ready = ready_of(self.reads.primary)
        self.raw_gate = raw_gate or RawGate(2, 1.0, 3600)
        self.max_rows = max(1, max_rows)

    async def json(self, interval: Interval, pages: list[str], *, force_raw: bool = False) -> bytes:
        return (await self.answer(interval, pages, force_raw=force_raw))[0]

    async def answer(self, interval: Interval, pages: list[str], *,
                     force_raw: bool = False) -> tuple[bytes, ReadTarget]:
        """The JSON body and the server that computed it (a replica, or the primary)."""
        return await self.reads.run(lambda target: self._answer_on(target, interval, pages, force_raw))

    async def _answer_on(self, target: ReadTarget, interval: Interval, pages: list[str],
                         force_raw: bool) -> tuple[bytes, ReadTarget]:
        # The ready tables and retention horizons of the server that answers.
        ready = await ready_of(target).current(target.pool)
        table = None if force_raw else seed_table(interval, ready)
        horizons = getattr(ready, "horizons", NO_HORIZONS)
        if table is None and horizons.raw is not None:
            raise validation_error("duration", (
                f"this duration needs raw events, and those before {horizons.raw.isoformat()} were dropped "
                "(the raw retention horizon, RETENTION_DAYS): ask for whole days (1 day, 1 week, 1 month)"),
                rule="retention_horizon")
        async with self.raw_gate.slot(table is None and self.raw_gate.heavy(_ALL_TIME)):
            async with connection(target.pool) as conn:
                async with read_snapshot(conn, many=False):
                    cur = await conn.execute(seed_json_query(table), {
                        "width": interval.to_pg(), "pages": pages, "limit": self.max_rows + 1,
                        "kept_from": horizons.rollup}, prepare=False)
                    rows = await cur.fetchall()
        if len(rows) > self.max_rows:
            raise validation_error("duration", f"the answer would have more than {self.max_rows} rows; "
                                               "ask for a coarser duration or fewer pages", rule="too_many_rows")
        return ("[" + ",".join(r[0] for r in rows) + "]").encode(), target
