"""`python -m bench visits [--rows N] [--reps R] [--visitors V]`: what visits cost at ingest.

In-process, in a fresh schema at the migrations' head: batches of N events written by
`repository.insert_events` (COPY + every insert hook, committed), alternating between the
rollups' hooks alone and the rollups' hooks plus the visits hook, R batches each. The events
carry visitor ids (V visitors, times spread over the last --spread seconds, out of order), which the
ingestion benchmark's in-process rows (a') do not, so this is the like-for-like figure. Prints
the median and minimum milliseconds per batch of each and their ratio. (The HTTP figures of
`python -m bench ingest` include visits too, but all their events come from one visitor.)
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from support import database_url, drop_schema, new_schema_name  # noqa: E402


async def _run(url: str, schema: str, rows: int, reps: int, visitors: int, spread: int) -> dict[str, list[float]]:
    from analytics import rollups
    from analytics.ingestion import repository as repo
    from analytics.rollups import visits
    from bench.ingest import make_records

    rollups.install()
    rng = random.Random(7)
    base = make_records(rows)
    now = datetime.now(timezone.utc)
    times: dict[str, list[float]] = {"rollups": [], "rollups+visits": []}
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        await conn.execute("SET jit = off")
        await conn.commit()
        for rep in range(reps * 2):
            label = "rollups+visits" if rep % 2 else "rollups"
            if rep % 2:
                repo.register_insert_hook(visits.ingest_hook)
            else:
                repo.unregister_insert_hook(visits.ingest_hook)
            recs = [r._replace(id=uuid.uuid4(), visitor_id=rng.randrange(visitors),
                               time=now - timedelta(seconds=rng.randrange(spread)))
                    for r in base]
            t0 = time.perf_counter()
            async with conn.transaction():
                await repo.insert_events(conn, recs)
            times[label].append((time.perf_counter() - t0) * 1000)
    return times


def main(argv: list[str]) -> int:
    from analytics import migrations
    from analytics.config import Secret, Settings

    ap = argparse.ArgumentParser(prog="python -m bench visits")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--visitors", type=int, default=2000)
    ap.add_argument("--spread", type=int, default=86400, help="event times within this many seconds of now")
    args = ap.parse_args(argv)
    url = database_url()
    schema = new_schema_name("bench_visits")
    try:
        migrations.upgrade(Settings(database_url=Secret(url), db_schema=schema))
        t = asyncio.run(_run(url, schema, args.rows, args.reps, args.visitors, args.spread))
    finally:
        drop_schema(url, schema)
    a, b = t["rollups"], t["rollups+visits"]
    print(f"[bench] visits: {args.reps} batches of {args.rows} events each way, alternating, "
          f"{args.visitors} visitors, times within {args.spread} s")
    print(f"  rollups only     median {statistics.median(a):7.1f} ms  min {min(a):7.1f} ms per batch")
    print(f"  rollups + visits median {statistics.median(b):7.1f} ms  min {min(b):7.1f} ms per batch")
    print(f"  ratio (with/without): median {statistics.median(b) / statistics.median(a):.2f}, "
          f"min {min(b) / min(a):.2f}")
    return 0
