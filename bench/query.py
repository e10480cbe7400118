"""Query benchmark: dashboard questions over HTTP (rollups) vs the raw time_bucket GROUP BY.

    python -m bench query [--events N] [--days D] [--reps R] [--raw-reps R] [--explain] [--keep]
                          [--reuse] [--db NAME] [--ingest-rows N]

1. A database of its own (default `analytics_bench_query`): N events (default 10,000,000) over
   D days generated in SQL (bench/querydata.py), written straight into the events table.
2. Rollups rebuilt with the documented command: `python -m analytics.rollups rebuild`.
3. The service started by its production command (gunicorn, 2 workers) with the answer cache
   off (STATS_CACHE_TTL_SECONDS=0): every request below reaches the database.
4. Each question R times over HTTP (median, p95), then the raw time_bucket GROUP BY for the same
   question straight over psycopg (no HTTP or JSON cost on that side), in the same run. The
   HTTP client is one keep-alive connection of the standard library's http.client: httpx spent
   0.3-1 ms of its own Python per request, which a browser's fetch does not. The table's first
   line is that client's floor, GET /healthz (no database).
5. The ingest cost of the rollup hooks: a COPY of --ingest-rows rows through insert_events with
   and without them, in a throwaway schema.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import http.client
import urllib.parse
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from analytics.config import _database_url  # noqa: E402
from analytics.aggregation.seed_reader import RAW_SEED_QUERY  # noqa: E402
from bench import querydata  # noqa: E402

SCHEMA = "bench"


def _url_for(db: str) -> str:
    d = conninfo_to_dict(_database_url())
    d["dbname"] = db
    return make_conninfo(**d)


def _ensure_database(db: str, reuse: bool) -> bool:
    """Create the benchmark database; True if it already holds loaded data (with --reuse)."""
    admin = _url_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if exists and reuse:
            return True
        if exists:
            conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    return False


def _drop_database(db: str) -> None:
    with psycopg.connect(_url_for("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _env(url: str, schema: str) -> dict:
    return {**os.environ, "DATABASE_URL": url, "DB_SCHEMA": schema, "PYTHONPATH": str(ROOT / "src"),
            "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}


def _bootstrap(url: str, schema: str) -> None:
    from analytics.config import Settings
    from analytics.schema import bootstrap

    os.environ.update(DATABASE_URL=url, DB_SCHEMA=schema)

    async def run():
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await bootstrap(conn, Settings())

    asyncio.run(run())


def _load(url: str, events: int, days: int) -> None:
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{SCHEMA}, public",))
        querydata.load(conn, events, days)
        conn.commit()
        conn.execute("ANALYZE events")
    print(f"loaded {events:,} events over {days} days in SQL: {time.perf_counter() - t0:.0f}s", flush=True)


def _rebuild(url: str) -> None:
    t0 = time.perf_counter()
    print("$ python -m analytics.rollups rebuild", flush=True)
    subprocess.run([sys.executable, "-m", "analytics.rollups", "rebuild"], env=_env(url, SCHEMA), check=True)
    print(f"(rebuild wall time {time.perf_counter() - t0:.0f}s)", flush=True)


def _fill_missing(url: str) -> None:
    """A database kept by an earlier run, made before a revision that added rollups: bring it to
    head and fill only those tables, as an operator would after the upgrade (README, "rebuild
    --missing"); instant when there is nothing to fill."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "analytics.rollups", "rebuild", "--missing"],
                         env=_env(url, SCHEMA), check=True, capture_output=True, text=True).stdout
    if "no rollup table to fill" not in out:
        print(f"$ python -m analytics.rollups rebuild --missing\n{out.rstrip()}\n"
              f"(wall time {time.perf_counter() - t0:.0f}s)", flush=True)


def _sizes(url: str, n: int) -> None:
    """Disk per million events: the raw hypertable (with its indexes) and every rollup table
    (the agg/dur families, first-seen sessions and session state), for the scaling guide."""
    with psycopg.connect(url, autocommit=True) as conn:
        raw = conn.execute("SELECT hypertable_size(format('%%I.events', %s::text)::regclass)", (SCHEMA,)).fetchone()[0]
        rollups = conn.execute("""SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint, count(*)
                                  FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                                  WHERE s.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'rollup%%'""",
                               (SCHEMA,)).fetchone()
    per_m = 1_000_000 / max(1, n)
    print(f"\ndisk: raw events (hypertable_size, with indexes) {raw / 2**20:,.0f} MiB = "
          f"{raw * per_m / 2**20:,.0f} MiB per million events; rollups ({rollups[1]} tables, "
          f"pg_total_relation_size) {rollups[0] / 2**20:,.0f} MiB = {rollups[0] * per_m / 2**20:,.0f} MiB "
          f"per million events", flush=True)


def _questions(end: datetime) -> list[dict]:
    z = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    d30, d7, h24, d90 = (end - timedelta(days=30), end - timedelta(days=7), end - timedelta(hours=24),
                         end - timedelta(days=90))
    return [
        {"name": "30d by 1 day, by page+os (top 10)", "path": "/api/v1/stats/timeseries",
         "params": {"interval": "1 day", "start": z(d30), "end": z(end), "group_by": ["page", "os"]},
         "raw": """SELECT time_bucket('1 day', time) AS bucket, page, os, count(*) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
         "range": (d30, end)},
        {"name": "30d by 1 day, by page+os (all)", "path": "/api/v1/stats/timeseries",
         "params": {"interval": "1 day", "start": z(d30), "end": z(end), "group_by": ["page", "os"],
                    "limit": 10000},
         "raw": """SELECT time_bucket('1 day', time) AS bucket, page, os, count(*) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
         "range": (d30, end)},
        {"name": "7d by 1 hour, by page (top 10)", "path": "/api/v1/stats/timeseries",
         "params": {"interval": "1 hour", "start": z(d7), "end": z(end), "group_by": ["page"]},
         "raw": """SELECT time_bucket('1 hour', time) AS bucket, page, count(*) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot GROUP BY 1, 2 ORDER BY 1, 2""",
         "range": (d7, end)},
        {"name": "7d by 1 hour, by page (all)", "path": "/api/v1/stats/timeseries",
         "params": {"interval": "1 hour", "start": z(d7), "end": z(end), "group_by": ["page"], "limit": 10000},
         "raw": """SELECT time_bucket('1 hour', time) AS bucket, page, count(*) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot GROUP BY 1, 2 ORDER BY 1, 2""",
         "range": (d7, end)},
        {"name": "24h by 5 minutes, totals", "path": "/api/v1/stats/timeseries",
         "params": {"interval": "5 minutes", "start": z(h24), "end": z(end)},
         "raw": """SELECT time_bucket('5 minutes', time) AS bucket, count(*) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot GROUP BY 1 ORDER BY 1""",
         "range": (h24, end)},
        {"name": "top 10 pages 90d, unique sessions", "path": "/api/v1/stats/breakdown",
         "params": {"group_by": "page", "metrics": ["events", "unique_sessions"], "limit": 10,
                    "start": z(d90), "end": z(end)},
         "raw": """SELECT page, count(*), count(DISTINCT session_id) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot GROUP BY 1 ORDER BY 2 DESC LIMIT 10""",
         "range": (d90, end)},
        # what the dashboard asks once a page is clicked (rollups of revision 0012)
        {"name": "30d countries of one page (top 10)", "path": "/api/v1/stats/breakdown",
         "params": {"group_by": "country", "page": "/", "limit": 10, "start": z(d30), "end": z(end)},
         "raw": """SELECT country, count(*) FROM events WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot
                   AND page = '/' GROUP BY 1 ORDER BY 2 DESC LIMIT 10""",
         "range": (d30, end)},
        {"name": "30d median time on one page", "path": "/api/v1/stats/totals",
         "params": {"metrics": "median_duration", "page": "/", "start": z(d30), "end": z(end)},
         "raw": """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) FROM events
                   WHERE time >= %(s)s AND time < %(e)s AND NOT is_bot AND page = '/' AND duration IS NOT NULL""",
         "range": (d30, end)},
        {"name": "seed GET /api/events/?duration=1 day", "path": "/api/events/",
         "params": {"duration": "1 day"}, "raw": RAW_SEED_QUERY, "range": None},
    ]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]


class _Client:
    """One keep-alive HTTP/1.1 connection: the least client time per request (see the docstring)."""

    def __init__(self, base_url: str, headers: dict | None = None) -> None:
        u = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        self.headers = dict(headers or {})  # the read key: what a dashboard sends, and its check

    def get(self, path: str, params: dict | None = None) -> tuple[int, bytes]:
        if params:
            path += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # The server closes idle keep-alive connections (while the raw side runs): reconnect.
            self.conn.close()
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self.conn.close()


def _time_http(client: _Client, q: dict, reps: int) -> tuple[list[float], object]:
    status, body = client.get(q["path"], q.get("params"))  # warm-up (connections, plans); not counted
    if status != 200:
        raise SystemExit(f"{q['path']}: HTTP {status}: {body[:500]!r}")
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        status, body = client.get(q["path"], q.get("params"))
        out.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit(f"{q['path']}: HTTP {status}: {body[:500]!r}")
    return out, json.loads(body)


def _time_raw(url: str, q: dict, reps: int) -> list[float]:
    from analytics.aggregation.seed_api import DEFAULT_LOOKUP_PAGES as pages

    args = ({"width": "1 day", "pages": pages} if q["range"] is None else
            {"s": q["range"][0], "e": q["range"][1]})
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{SCHEMA}, public",))
        for _ in range(reps):
            t0 = time.perf_counter()
            conn.execute(q["raw"], args).fetchall()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _explain(url: str, q: dict, end: datetime) -> None:
    """EXPLAIN ANALYZE of the statement the service runs for this question."""
    from analytics.aggregation.builder import Builder
    from analytics.aggregation.planner import plan
    from analytics.aggregation.query import build_query

    if q["path"] == "/api/events/":
        return
    p = q["params"]
    kind = q["path"].rsplit("/", 1)[1]
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    sq = build_query(kind, interval=p.get("interval"), start=datetime.fromisoformat(p["start"]),
                     end=datetime.fromisoformat(p["end"]), timezone_name="UTC",
                     group_by=as_list(p.get("group_by", [])), metrics=as_list(p.get("metrics", [])),
                     filters={}, include_bots=False, order_by=None, limit=p.get("limit"), offset=0,
                     compare=None, source="auto", max_buckets=10000)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{SCHEMA}, public",))
        conn.execute("SET jit = off")
        ready = {r[0] for r in conn.execute("SELECT name FROM rollup_meta WHERE ready")}
        groups = None
        if kind == "timeseries" and sq.group_by:  # as the service does: rank the groups first
            ranking = replace(sq, kind="breakdown", edges=())
            rb = Builder(ranking)
            text, _ = conn.execute(rb.statement(plan(ranking, ready)), rb.params, prepare=False).fetchone()
            groups = [tuple(r[d] for d in sq.group_by) for r in json.loads(text)]
        pl = plan(sq, ready)
        b = Builder(sq, groups)
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + b.statement(pl), b.params,
                            prepare=False).fetchall()
    print(f"\n--- EXPLAIN ANALYZE: {q['name']} ({pl.agg.label})")
    for (line,) in rows:
        print("   " + re.sub(r"'\{[^}]*\}'", "'{...}'", line))  # the long edge/label arrays elided


def _ingest_overhead(url: str, rows: int) -> None:
    """COPY `rows` events through insert_events, without and then with the rollup hooks."""
    from analytics.ingestion import repository
    from analytics.ingestion.pipeline import EventRecord
    from analytics.rollups import ingest_statements

    schema = f"bench_ingest_{uuid.uuid4().hex[:6]}"
    _bootstrap(url, schema)
    now = datetime.now(timezone.utc)
    uas = [querydata.USER_AGENTS[i % 5][0] for i in range(5)]
    from analytics.ingestion.enrich import classify

    infos = [classify(u) for u in uas]
    recs = []
    for i in range(rows):
        info = infos[i % 5]
        recs.append(EventRecord(uuid.uuid4(), now - timedelta(seconds=(i * 37) % 86400), f"/p/{i % 300}",
                                "10.0.0.1", uas[i % 5], "", ["", "google.com"][i % 2], f"s{i // 5}", i % 120,
                                None, info.os, info.browser, info.device, info.is_bot))
    saved = list(repository._hooks)

    async def copy(records, hooks: bool) -> float:
        repository._hooks[:] = [ingest_statements] if hooks else []
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
            await conn.commit()
            t0 = time.perf_counter()
            async with conn.transaction():
                for i in range(0, len(records), 10_000):
                    await repository.insert_events(conn, records[i:i + 10_000])
            return time.perf_counter() - t0

    try:
        half = rows // 2
        plain = asyncio.run(copy(recs[:half], False))
        hooked = asyncio.run(copy(recs[half:], True))
    finally:
        repository._hooks[:] = saved
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"\ningest through insert_events ({half:,} rows each, batches of 10,000, one transaction):")
    print(f"  without rollup hooks: {plain:6.2f}s  {half / plain:10,.0f} rows/s")
    print(f"  with rollup hooks:    {hooked:6.2f}s  {half / hooked:10,.0f} rows/s  "
          f"({hooked / plain:.2f}x the time)")


def main(argv: list[str]) -> int:
    global SCHEMA
    ap = argparse.ArgumentParser(prog="python -m bench query")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--reps", type=int, default=20, help="HTTP requests per question")
    ap.add_argument("--raw-reps", type=int, default=5, help="raw queries per question (0: skip the raw side)")
    ap.add_argument("--db", default="analytics_bench_query")
    ap.add_argument("--reuse", action="store_true", help="reuse a database loaded by a previous --keep run")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--schema", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each statement")
    ap.add_argument("--ingest-rows", type=int, default=200_000, help="0 to skip the ingest-overhead part")
    ap.add_argument("--only", default="", help="only the questions whose name contains this text")
    args = ap.parse_args(argv)

    from support import Server

    SCHEMA = args.schema
    url = _url_for(args.db)
    loaded = _ensure_database(args.db, args.reuse)
    try:
        if not loaded:
            _bootstrap(url, SCHEMA)
            _load(url, args.events, args.days)
            _rebuild(url)
        else:
            _fill_missing(url)
        with psycopg.connect(url) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (f"{SCHEMA}, public",))
            (n, last) = conn.execute("SELECT count(*), max(time) FROM events").fetchone()
        end = last.replace(hour=0, minute=0, second=0, microsecond=0)  # the last whole UTC day
        _sizes(url, n)
        questions = [q for q in _questions(end) if args.only in q["name"]]
        srv = Server(url, SCHEMA, workers=2, env={"STATS_CACHE_TTL_SECONDS": "0", "LOG_LEVEL": "WARNING"},
                     log_path=Path(f"/tmp/bench-query-{os.getpid()}.log")).start()
        rows = []
        try:
            client = _Client(srv.url, srv.headers)
            try:
                floor, _ = _time_http(client, {"path": "/healthz"}, args.reps)
                for q in questions:
                    api, body = _time_http(client, q, args.reps)
                    raw = _time_raw(url, q, args.raw_reps) if args.raw_reps else []
                    source = body["meta"]["source"] if isinstance(body, dict) else "rollup (seed)"
                    rows.append((q["name"], api, raw, source))
                    print(f"  measured: {q['name']}", flush=True)
            finally:
                client.close()
        finally:
            srv.stop()
        print(f"\nquery benchmark: {n:,} events over {args.days} days; API over HTTP "
              f"({args.reps} requests, cache off, gunicorn 2 workers) vs raw SQL ({args.raw_reps} runs)")
        print(f"{'question':38s} {'API med':>8s} {'API p95':>8s} {'raw med':>9s} {'raw p95':>9s} {'ratio':>7s}  source")
        print(f"{'(HTTP floor: GET /healthz)':38s} {statistics.median(floor):7.1f}ms {_pct(floor, 0.95):7.1f}ms")
        for name, api, raw, source in rows:
            am, ap95 = statistics.median(api), _pct(api, 0.95)
            if not raw:  # --raw-reps 0: the API side only
                print(f"{name:38s} {am:7.1f}ms {ap95:7.1f}ms {'-':>9s} {'-':>9s} {'-':>7s}  {source}")
                continue
            rm, rp95 = statistics.median(raw), _pct(raw, 0.95)
            print(f"{name:38s} {am:7.1f}ms {ap95:7.1f}ms {rm:8.0f}ms {rp95:8.0f}ms {rm / am:6.0f}x  {source}")
        if args.explain:
            for q in questions:
                _explain(url, q, end)
        if args.ingest_rows:
            _ingest_overhead(url, args.ingest_rows)
    finally:
        if not args.keep:
            _drop_database(args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
