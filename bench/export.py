"""Export benchmark: GET /api/v1/events/export over HTTP, rows/s and the worker's memory.

    python -m bench export [--events N] [--days D] [--db NAME] [--reuse] [--keep] [--skip-compare]

1. A database of its own (default `analytics_bench_export`, 1,000,000 events over 90 days made
   by the query benchmark's loader, bench/querydata.py; `--events 10000000` for the 10M figure),
   or, with `--reuse --db analytics_bench_query`, the query benchmark's (what `make bench` does).
2. In-process, no HTTP: the first million rows (at most) read by `COPY ... TO STDOUT` (what the service runs) and by
   a named (server-side) cursor fetching the same NDJSON lines 10,000 at a time: rows/s of each.
3. The service (gunicorn, ONE worker, so every request lands on the worker measured): export
   1,000 rows, then every row, as NDJSON and as CSV, and CSV with gzip; rows/s and MB/s as the
   client receives them (one http.client connection, read in 1 MiB pieces, discarded). The
   worker's RSS (VmRSS) and peak RSS (VmHWM, from /proc) after the start, after 1,000 rows and
   after all rows: flat means the peak does not grow with the row count. And the worker's CPU
   time per row (from /proc): what the service itself spends, whatever else runs on the machine
   (the rest of the time is PostgreSQL formatting rows, and waiting for a core).
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from bench import query as qb  # noqa: E402

COMPARE_ROWS = 1_000_000


def _z(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _proc_mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a local process, in bytes."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0]) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a local process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_pid(base: str, headers: dict) -> int:
    import httpx
    return httpx.get(base + "/readyz", timeout=10, headers=headers).json()["process"]["pid"]


def _export(base: str, params: dict, gzip: bool = False,
            key_headers: dict | None = None) -> tuple[int, int, int, float]:
    """(status, bytes received, lines, seconds) of one export read to its end."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    headers = {"Accept-Encoding": "gzip"} if gzip else {"Accept-Encoding": "identity"}
    headers.update(key_headers or {})  # a read key, as a client would send (its check is measured)
    t0 = time.perf_counter()
    conn.request("GET", "/api/v1/events/export?" + urllib.parse.urlencode(params), headers=headers)
    r = conn.getresponse()
    n = lines = 0
    while True:
        piece = r.read(1 << 20)
        if not piece:
            break
        n += len(piece)
        lines += piece.count(b"\n")
    dt = time.perf_counter() - t0
    conn.close()
    return r.status, n, lines, dt


async def _copy_vs_cursor(url: str, schema: str, start: datetime, end: datetime, rows: int) -> None:
    from analytics.aggregation.query import build_query
    from analytics.export.statement import SETTINGS, copy_statement

    q = build_query("totals", interval=None, start=start, end=end, timezone_name="UTC", group_by=[],
                    metrics=[], filters={}, include_bots=True, order_by=None, limit=None, offset=0,
                    compare=None, source="auto", max_buckets=10000)
    statement, params = copy_statement(q, "ndjson")
    select = statement[len("COPY ("):statement.rindex(") TO STDOUT")]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        await conn.execute("SET jit = off")
        for setting in SETTINGS:
            await conn.execute(setting.replace("SET LOCAL", "SET"))
        t0 = time.perf_counter()
        n = size = 0
        async with psycopg.AsyncClientCursor(conn).copy(statement, params) as copy:
            async for row in copy:
                n += 1
                size += len(row)
        t_copy = time.perf_counter() - t0
        csv_statement, csv_params = copy_statement(q, "csv")
        t0 = time.perf_counter()
        k = 0
        async with psycopg.AsyncClientCursor(conn).copy(csv_statement, csv_params) as copy:
            async for row in copy:
                k += 1
        t_csv = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = 0
        async with conn.transaction():
            cur = conn.cursor(name="bench_export")
            await cur.execute(psycopg.AsyncClientCursor(conn).mogrify(select, params))
            while True:
                batch = await cur.fetchmany(10_000)
                if not batch:
                    break
                m += len(batch)
                for (line,) in batch:
                    line.encode()  # what a response body needs: bytes
            await cur.close()
        t_cursor = time.perf_counter() - t0
    print(f"\nin-process, {rows:,} rows, no HTTP, one connection:")
    print(f"  COPY ... TO STDOUT, NDJSON (the service) {n / t_copy:10,.0f} rows/s  {size / t_copy / 1e6:6.1f} MB/s")
    print(f"  COPY ... TO STDOUT, CSV                  {(k - 1) / t_csv:10,.0f} rows/s")
    print(f"  named cursor, NDJSON, fetchmany(10,000)  {m / t_cursor:10,.0f} rows/s  "
          f"(COPY is {t_cursor / t_copy:.2f}x as fast)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench export")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--db", default="analytics_bench_export")
    ap.add_argument("--reuse", action="store_true", help="use the database as loaded (e.g. by the query benchmark)")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--schema", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--skip-compare", action="store_true", help="skip the COPY vs named cursor part")
    args = ap.parse_args(argv)

    from support import Server

    url = qb._url_for(args.db)
    loaded = qb._ensure_database(args.db, args.reuse)
    try:
        if not loaded:
            qb._bootstrap(url, args.schema)
            qb.SCHEMA = args.schema
            qb._load(url, args.events, args.days)
        with psycopg.connect(url) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (f"{args.schema}, public",))
            n, first, last = conn.execute("SELECT count(*), min(time), max(time) FROM events").fetchone()
            (t1000,) = conn.execute("SELECT time FROM events ORDER BY time OFFSET 1000 LIMIT 1").fetchone()
            # The in-process comparison reads at most COMPARE_ROWS rows (three passes of 10M would
            # add minutes to `make bench` and say nothing more).
            cmp_end = conn.execute("SELECT time FROM events ORDER BY time OFFSET %s LIMIT 1",
                                   (COMPARE_ROWS,)).fetchone()
            cmp_rows = COMPARE_ROWS if cmp_end else n
        start = first.replace(microsecond=0)
        end = datetime.fromtimestamp(int(last.timestamp()) + 1, timezone.utc)
        if not args.skip_compare:
            asyncio.run(_copy_vs_cursor(url, args.schema, start, cmp_end[0] if cmp_end else end, cmp_rows))
        srv = Server(url, args.schema, workers=1, env={"LOG_LEVEL": "WARNING"},
                     log_path=Path(f"/tmp/bench-export-{os.getpid()}.log")).start()
        try:
            pid = _worker_pid(srv.url, srv.admin_headers)
            rss0, hwm0 = _proc_mem(pid)
            print(f"\nexport over HTTP (gunicorn, 1 worker, worker pid {pid}); {n:,} events in the database")
            print(f"  worker after start:                    RSS {rss0 / 2**20:6.1f} MiB, peak {hwm0 / 2**20:6.1f} MiB")
            print(f"{'  export':40s} {'rows':>11s} {'seconds':>8s} {'rows/s':>10s} {'MB/s':>7s} "
                  f"{'worker CPU':>11s}  worker RSS / peak after")
            small = {"start": _z(start), "end": _z(t1000)}
            whole = {"start": _z(start), "end": _z(end)}
            for name, params, gz, rows in (
                    ("1,000 rows, NDJSON", small, False, 1000),
                    ("1,000 rows, CSV", {**small, "format": "csv"}, False, 1000),
                    ("all rows, NDJSON", whole, False, n),
                    ("all rows, CSV", {**whole, "format": "csv"}, False, n),
                    ("all rows, CSV, gzip", {**whole, "format": "csv"}, True, n)):
                cpu0 = _cpu_seconds(pid)
                status, size, lines, dt = _export(srv.url, params, gz, srv.headers)
                cpu = _cpu_seconds(pid) - cpu0
                if status != 200:
                    raise SystemExit(f"{name}: HTTP {status}")
                if not gz:
                    rows = lines - (1 if params.get("format") == "csv" else 0)
                rss, hwm = _proc_mem(pid)
                print(f"  {name:38s} {rows:11,d} {dt:8.2f} {rows / dt:10,.0f} {size / dt / 1e6:7.1f} "
                      f"{cpu / rows * 1e6:6.2f} us/row  "
                      f"{rss / 2**20:6.1f} / {hwm / 2**20:6.1f} MiB")
        finally:
            srv.stop()
    finally:
        if not args.keep and not args.reuse:
            qb._drop_database(args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
