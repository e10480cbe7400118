"""Export benchmark: GET /api/v1/events/export over HTTP, rows/s and the worker's memory.

    python -m bench export [--events N] [--days D] [--db NAME] [--reuse] [--keep] [--skip-compare]
                           [--variants]

1. A database of its own (default `analytics_bench_export`, 1,000,000 events over 90 days made
   by the query benchmark's loader, bench/querydata.py; `--events 10000000` for the 10M figure),
   or, with `--reuse --db analytics_bench_query`, the query benchmark's (what `make bench` does).
2. In-process, no HTTP: the first million rows (at most) read by the service's `COPY ... TO
   STDOUT` and chunk encoding (NDJSON: export/ndjson.py; CSV as COPY writes it), rows/s and this
   process's CPU per row; with `--variants` also NDJSON written by SQL (row_to_json, the
   statement before; json_build_object; concatenated to_json() pieces; concatenation escaping
   only values that need it; and unescaped concatenation, wrong but the ceiling of that way).
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


# NDJSON statements measured against the service's (the CSV-shaped COPY + export/ndjson.py): the
# previous one (row_to_json), and SQL that writes each JSON line itself (`--variants`).
_TIME = "replace(replace(e.time::text, ' ', 'T'), '+00', 'Z')"
_NDJSON_COPY = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"


def _sql_variants(where: str) -> dict[str, str]:
    from analytics.export.statement import FIELDS

    def value(f: str, text) -> str:
        return {"id": "'\"' || e.id::text || '\"'", "time": f"'\"' || {_TIME} || '\"'",
                "duration": "coalesce(e.duration::text, 'null')", "is_bot": "e.is_bot::text",
                "props": "coalesce(e.props::text, 'null')"}.get(f) or text(f)

    def concat(text) -> str:
        return " || ".join(f"'{'{' if i == 0 else ','}\"{f}\":' || {value(f, text)}"
                           for i, f in enumerate(FIELDS)) + " || '}'"

    to_json = lambda f: f"coalesce(to_json(e.{f})::text, 'null')"  # noqa: E731
    # Escape only the values that need it (a regex per value).
    esc = lambda f: (f"CASE WHEN e.{f} IS NULL THEN 'null' WHEN e.{f} ~ '[\"\\\\\\x01-\\x1f]' "  # noqa: E731
                     f"THEN to_json(e.{f})::text ELSE '\"' || e.{f} || '\"' END")
    raw = lambda f: f"coalesce('\"' || e.{f} || '\"', 'null')"  # noqa: E731
    cols = ", ".join(f"{_TIME} AS time" if f == "time" else f"e.{f}" for f in FIELDS)
    out = {
        "row_to_json (the statement before)": f"SELECT row_to_json(r)::text FROM (SELECT {cols} {where}) r",
        "json_build_object": "SELECT json_build_object(" + ", ".join(
            f"'{f}', " + (_TIME if f == "time" else f"e.{f}") for f in FIELDS) + f")::text {where}",
        "concatenated to_json() per text column": f"SELECT {concat(to_json)} {where}",
        "concatenated, escaped only when needed": f"SELECT {concat(esc)} {where}",
        "concatenated, no escaping (wrong; the ceiling)": f"SELECT {concat(raw)} {where}",
    }
    return {k: f"COPY ({v}) TO STDOUT WITH ({_NDJSON_COPY})" for k, v in out.items()}


async def _in_process(url: str, schema: str, start: datetime, end: datetime, rows: int, variants: bool) -> None:
    """rows/s of the service's COPY + chunk encoding in one connection, without HTTP."""
    from analytics.aggregation.query import build_query
    from analytics.export.ndjson import encoder_for
    from analytics.export.statement import SETTINGS, copy_statement
    from analytics.export.stream import CHUNK_BYTES

    q = build_query("totals", interval=None, start=start, end=end, timezone_name="UTC", group_by=[],
                    metrics=[], filters={}, include_bots=True, order_by=None, limit=None, offset=0,
                    compare=None, source="auto", max_buckets=10000)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        await conn.execute("SET jit = off")
        for setting in SETTINGS:
            await conn.execute(setting.replace("SET LOCAL", "SET"))

        async def run(statement: str, params: dict, encode) -> tuple[int, int, float, float]:
            """(rows, bytes out, seconds, CPU seconds of this process), chunked as the service does."""
            t0, c0 = time.perf_counter(), time.process_time()
            n = size = pending = 0
            chunk: list = []
            async with psycopg.AsyncClientCursor(conn).copy(statement, params) as copy:
                async for row in copy:
                    chunk.append(row)
                    pending += len(row)
                    if pending >= CHUNK_BYTES:
                        n += len(chunk)
                        size += len(encode(chunk) if encode else b"".join(chunk))
                        chunk, pending = [], 0
            n += len(chunk)
            size += len(encode(chunk) if encode else b"".join(chunk))
            return n, size, time.perf_counter() - t0, time.process_time() - c0

        print(f"\nin-process, {rows:,} rows, no HTTP, one connection (load average {_load()}):")
        for name, fmt in (("NDJSON (the service)", "ndjson"), ("CSV", "csv")):
            statement, params = copy_statement(q, fmt)
            n, size, dt, cpu = await run(statement, params, encoder_for(fmt))
            n -= fmt == "csv"  # the header line
            print(f"  COPY, {name:44s} {n / dt:10,.0f} rows/s  {size / dt / 1e6:6.1f} MB/s  "
                  f"client CPU {cpu / n * 1e6:5.2f} us/row")
        if variants:
            statement, params = copy_statement(q, "csv")
            where = statement[statement.index(" FROM events e"):statement.rindex(") TO STDOUT")]
            for name, sql in _sql_variants(where).items():
                n, size, dt, cpu = await run(sql, params, None)
                print(f"  COPY, {name:44s} {n / dt:10,.0f} rows/s  {size / dt / 1e6:6.1f} MB/s  "
                      f"client CPU {cpu / n * 1e6:5.2f} us/row")
        if variants:
            # The database's share alone: the same statements written to the server's /dev/null
            # (needs a superuser or pg_write_server_files; skipped otherwise).
            statements = {"NDJSON (the service)": copy_statement(q, "ndjson"), "CSV": copy_statement(q, "csv")}
            statements.update({k: (v, statements["CSV"][1]) for k, v in _sql_variants(where).items()})
            print(f"  database only, COPY ... TO '/dev/null' (load average {_load()}):")
            try:
                for name, (sql, params) in statements.items():
                    t0 = time.perf_counter()
                    await psycopg.AsyncClientCursor(conn).execute(sql.replace("TO STDOUT", "TO '/dev/null'"), params)
                    print(f"    {name:50s} {rows / (time.perf_counter() - t0):10,.0f} rows/s")
            except psycopg.errors.InsufficientPrivilege:
                print("    (skipped: the role may not write server files)")
        print(f"  (load average after: {_load()})")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench export")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--db", default="analytics_bench_export")
    ap.add_argument("--reuse", action="store_true", help="use the database as loaded (e.g. by the query benchmark)")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--schema", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--skip-compare", action="store_true", help="skip the in-process part")
    ap.add_argument("--variants", action="store_true",
                    help="in-process, also the NDJSON statements written in SQL (row_to_json, ...)")
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
            asyncio.run(_in_process(url, args.schema, start, cmp_end[0] if cmp_end else end, cmp_rows,
                                    args.variants))
        srv = Server(url, args.schema, workers=1, env={"LOG_LEVEL": "WARNING"},
                     log_path=Path(f"/tmp/bench-export-{os.getpid()}.log")).start()
        try:
            pid = _worker_pid(srv.url, srv.admin_headers)
            rss0, hwm0 = _proc_mem(pid)
            print(f"\nexport over HTTP (gunicorn, 1 worker, worker pid {pid}); {n:,} events in the database; "
                  f"load average {_load()}")
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
