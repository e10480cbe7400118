"""`python -m bench.retention [--events N]`: what one retention run costs.

In its own schema of the configured database: N events over 120 days (sessions of a few
events each, spread over the whole span), rollups built by a full rebuild, then one run with
RETENTION_DAYS=60 and ROLLUP_RETENTION_DAYS=90 (no publish wait: no server reads this schema).
Prints the run's time, what it dropped, and the sizes before and after; drops the schema.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import psycopg

from analytics import migrations
from analytics.config import Secret, Settings, _database_url
from analytics.retention import run
from analytics.rollups.rebuild import rebuild


def _size(conn) -> tuple[int, int]:
    """(raw events bytes, every other table of the schema) on disk."""
    (raw,) = conn.execute("SELECT hypertable_size('events')").fetchone()
    (other,) = conn.execute("""SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> 'events'""").fetchone()
    return raw, int(other)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.retention")
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    url = _database_url()
    schema = f"bench_retention_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=Secret(url), db_schema=schema, events_chunk_interval="7 days",
                        retention_days=60, rollup_retention_days=90)
    migrations.upgrade(settings)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'SET search_path = "{schema}", public')
            t0 = time.perf_counter()
            conn.execute("""INSERT INTO events (id, time, page, session_id, duration, os, browser, device, referrer_host)
                SELECT gen_random_uuid(), now() - interval '120 days' * (g::float8 / %(n)s),
                       '/p' || (g %% 200), 's' || (g / 4 %% (%(n)s / 12)), g %% 300,
                       (ARRAY['Windows','MacOS','iOS','Android','Linux'])[g %% 5 + 1],
                       (ARRAY['Chrome','Safari','Firefox'])[g %% 3 + 1],
                       (ARRAY['desktop','mobile','tablet'])[g %% 3 + 1], (ARRAY['', 'google.com'])[g %% 2 + 1]
                FROM generate_series(1, %(n)s) g""", {"n": args.events})
            print(f"loaded {args.events:,} events over 120 days in {time.perf_counter() - t0:.1f}s")
            conn.autocommit = False
            rep = rebuild(conn)
            conn.autocommit = True
            print(f"rollups rebuilt in {rep.seconds:.1f}s; rollup_sessions: {rep.rows['rollup_sessions']:,} rows")
            raw0, other0 = _size(conn)
        t0 = time.perf_counter()
        report = run.run(settings, force=True, wait_s=0)
        took = time.perf_counter() - t0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'SET search_path = "{schema}", public')
            raw1, other1 = _size(conn)
            (left,) = conn.execute("SELECT count(*) FROM events").fetchone()
        print(f"retention run (RETENTION_DAYS=60, ROLLUP_RETENTION_DAYS=90): {took:.1f}s; "
              f"{len(report.chunks)} chunks dropped, {sum(report.rollup_rows.values()):,} rollup rows deleted, "
              f"sessions {report.sessions_trimmed:,} trimmed / {report.sessions_deleted:,} deleted; "
              f"{left:,} events left")
        print("  by step: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items()))
        print(f"  raw events {raw0 / 2**20:.0f} MB -> {raw1 / 2**20:.0f} MB; rollups and state "
              f"{other0 / 2**20:.0f} MB -> {other1 / 2**20:.0f} MB (before VACUUM returns space to reuse)")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    sys.exit(main(sys.argv[1:]))
