"""Time the schema bootstrap: a fresh schema (the migrations run) and one at head (no DDL).

    PYTHONPATH=src .venv/bin/python bench/schema_boot.py postgresql://postgres@127.0.0.1:54329/analytics
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import psycopg

from analytics.config import Secret, Settings
from analytics.schema import bootstrap

URL = sys.argv[1]

async def once(settings):
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        t = time.perf_counter(); await bootstrap(conn, settings); return (time.perf_counter() - t) * 1000

async def main():
    fresh, head = [], []
    for _ in range(5):
        s = Settings(database_url=Secret(URL), db_schema=f"measure_{uuid.uuid4().hex[:8]}")
        try:
            fresh.append(await once(s))
            head += [await once(s) for _ in range(5)]
        finally:
            with psycopg.connect(URL, autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{s.db_schema}" CASCADE')
    print(f"fresh schema (baseline runs): median {statistics.median(fresh):.0f} ms  {[round(x) for x in fresh]}")
    print(f"at head (no DDL): median {statistics.median(head):.1f} ms  max {max(head):.1f} ms")

asyncio.run(main())
