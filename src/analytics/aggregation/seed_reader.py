"""Answers seed 004's bucketed aggregate (bucket, page, operating_system, avg_duration, count)."""
from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ..db import connection
from .intervals import Interval

RAW_SEED_QUERY = """
SELECT time_bucket(%(width)s::interval, time) AS bucket,
       page,
       os AS operating_system,
       avg(duration)::float8 AS avg_duration,
       count(*) AS count
FROM events
WHERE page = ANY(%(pages)s)
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


class RawSeedReader:
    """Straight from the events hypertable; the os column was filled at ingest."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def buckets(self, interval: Interval, pages: list[str]) -> list[dict]:
        async with connection(self.pool) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(RAW_SEED_QUERY, {"width": interval.to_pg(), "pages": pages})
            return await cur.fetchall()
