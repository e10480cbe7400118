"""EXPLAIN (ANALYZE, BUFFERS) of the rollup hooks statement, per upsert, on any database.

    python -m bench.hooks [--db NAME] [--schema S] [--rows N] [--reps R] [--mix ingest|fresh]
                          [--rollback] [--triggers]

Each repetition writes N events the way insert_events does (COPY into events, the same bytes
into the staging table), then runs the hooks statement under EXPLAIN ANALYZE, and commits
(steady state: the rollup rows of "now" exist, as in a running service; --rollback leaves
nothing behind). Prints the median and the minimum over the repetitions of each upsert's time
(its ModifyTable node, which includes its input), the planning and execution time and the
session triggers. On a shared machine the minimum is the better estimate of the work itself.

--mix ingest: the ingestion benchmark's events (5,000 recurring sessions, 8 pages);
--mix fresh: every 5 events a new session (the query benchmark's ingest-overhead mix).
--triggers: the session triggers' own plans (auto_explain, as notices) for the last repetition.

Events it commits carry session ids that `python -m bench ingest --history` removes afterwards
(bench.ingest.remove_bench_events), with a ranged rollup rebuild.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import psycopg  # noqa: E402

_NODE = re.compile(r"Insert on (\S+).*actual time=[\d.]+\.\.([\d.]+) rows=")
_TOTALS = re.compile(r"(Planning Time|Execution Time): ([\d.]+)")
_TRIGGER = re.compile(r"Trigger (\S+) on \S+: time=([\d.]+)")


async def _run(url: str, schema: str, rows: int, reps: int, mix: str, commit: bool,
               triggers: bool) -> dict[str, list[float]]:
    from analytics import rollups
    from analytics.ingestion import repository as repo
    from bench.ingest import make_records

    rollups.install()
    times: dict[str, list[float]] = {}
    notices: list[str] = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        await conn.execute("SET jit = off")  # as the service's connections
        if triggers:
            for stmt in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                         "SET auto_explain.log_nested_statements = on", "SET auto_explain.log_analyze = on",
                         "SET auto_explain.log_level = 'notice'"):
                await conn.execute(stmt)
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        await conn.commit()
        base = make_records(rows)
        for _ in range(reps):
            tag = uuid.uuid4().hex[:6]
            fresh = mix == "fresh"
            recs = [r._replace(id=uuid.uuid4(), session_id=f"f{tag}-{i // 5}" if fresh else r.session_id)
                    for i, r in enumerate(base)]
            async with conn.transaction(force_rollback=not commit):
                await repo._ensure_stage(conn)
                await conn.execute(b"DELETE FROM events_stage")
                sink: list[bytes] = []
                t0 = time.perf_counter()
                await repo._copy_rows(conn, "events", recs, sink)
                t1 = time.perf_counter()
                await repo._copy_bytes(conn, repo._STAGE, sink)
                cur = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + repo._statements_for_hooks(conn)[1])
                plan = [r[0] for r in await cur.fetchall()]
            conn._analytics_stage_ready = False  # the transaction took the temp table with it
            times.setdefault("COPY into events (client side included)", []).append((t1 - t0) * 1000)
            for line in plan:
                for rx in (_NODE, _TOTALS, _TRIGGER):
                    m = rx.search(line)
                    if m:
                        times.setdefault(m.group(1), []).append(float(m.group(2)))
    if triggers:
        for n in notices:
            if "d0 AS MATERIALIZED" in n:
                print(n)
    return times


def main(argv: list[str]) -> int:
    from bench import query

    ap = argparse.ArgumentParser(prog="python -m bench.hooks")
    ap.add_argument("--db", default="analytics_bench_query")
    ap.add_argument("--schema", default=query.SCHEMA)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--mix", choices=("ingest", "fresh"), default="ingest")
    ap.add_argument("--rollback", action="store_true")
    ap.add_argument("--triggers", action="store_true")
    args = ap.parse_args(argv)
    times = asyncio.run(_run(query._url_for(args.db), args.schema, args.rows, args.reps, args.mix,
                             not args.rollback, args.triggers))
    print(f"hooks statement, {args.rows} rows of the {args.mix} mix, {args.reps} repetitions, "
          f"database {args.db} schema {args.schema} (ms):")
    print(f"  {'':40s} {'median':>8s} {'min':>8s}")
    for name, v in times.items():
        print(f"  {name:40s} {statistics.median(v):8.2f} {min(v):8.2f}")
    ups = [statistics.median(v) for k, v in times.items() if k.startswith("rollup_")]
    print(f"  {'sum of the upserts (medians)':40s} {sum(ups):8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
