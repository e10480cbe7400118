"""Dashboard latency against event count (issue 12 part 4): one suite, several database sizes.

    python -m bench curve [--sizes 1M,10M,30M] [--keep] [--reps R] [--days D] [--load-only]

For each size N (default 1M, 10M and 30M events over 90 days) a database of its own,
`analytics_bench_curve_<N>` (e.g. `analytics_bench_curve_10m`), loaded the fast way the query
benchmark loads (bench/querydata.py: events generated inside PostgreSQL with one INSERT ... SELECT,
then `python -m analytics.rollups rebuild`). A database is reused as it is when a previous run
finished loading it (a marker table, `bench.curve_loaded`, holds the load and rebuild times): keep
them between runs with `--keep`, and the second run only measures. Without `--keep` every
database this run loaded is dropped at the end (one it found loaded is kept).

Then, per size, the service with its production command (gunicorn, 2 workers, answer cache off)
and the query benchmark's dashboard questions (bench/query.py `_questions`), R times each over one
keep-alive connection, in `--rounds` rounds whose size order alternates (1M, 10M, 30M, then 30M,
10M, 1M): median and p95 in ms over all rounds, and each median's ratio to the smallest size's.
The curve is called flat when no question's median grows more than 1.5x from the smallest to the
largest size (the noise of this shared machine is about that much from run to run: compare the
load averages printed beside each size). `--sizes 1M,10M` skips the 30M database (its load takes
about half an hour on 2 idle cores; the run prints how long each load took).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from bench import query as qb  # noqa: E402

SCHEMA = "bench"
FLAT_RATIO = 1.5
MIN_FREE_BYTES = 20 * 2**30  # keep > 20 GB free on the disk while loading
BYTES_PER_EVENT = 700  # raw + indexes + rollups + WAL while loading, measured at 1M/10M (rounded up)


def parse_size(text: str) -> int:
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in "kmb" else t) * mult)


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def db_name(n: int) -> str:
    return f"analytics_bench_curve_{size_label(n).lower().replace(',', '_')}"


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _loaded(url: str) -> tuple[int, float, float] | None:
    """(events, load seconds, rebuild seconds) when a previous run finished loading `url`."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            return conn.execute(f"SELECT events, load_s, rebuild_s FROM {SCHEMA}.curve_loaded").fetchone()
    except psycopg.Error:
        return None


def _events(url: str) -> int | None:
    """The events in a database a previous run created (None: no such database or table)."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            return conn.execute(f"SELECT count(*) FROM {SCHEMA}.events").fetchone()[0]
    except psycopg.Error:
        return None


def _mark(url: str, n: int, t_load: float, t_rebuild: float) -> tuple[int, float, float]:
    """Record that the database is loaded and rebuilt (what a later run reuses)."""
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.curve_loaded (events bigint, load_s float8, rebuild_s float8)")
        conn.execute(f"INSERT INTO {SCHEMA}.curve_loaded VALUES (%s, %s, %s)", (n, t_load, t_rebuild))
    return n, t_load, t_rebuild


def ensure_loaded(n: int, days: int) -> tuple[bool, tuple[int, float, float]]:
    """Load database `n` unless a previous run finished it; (loaded now, (events, load s, rebuild s))."""
    db = db_name(n)
    url = qb._url_for(db)
    done = _loaded(url)
    if done is not None and done[0] == n:
        print(f"{size_label(n)}: reusing {db} (loaded in {done[1]:.0f}s + rebuild {done[2]:.0f}s)", flush=True)
        qb.SCHEMA = SCHEMA
        qb._fill_missing(url)  # kept from before a revision that added rollups
        return False, done
    events = _events(url)
    if events == n:  # loaded, but the rebuild did not finish (stopped): rebuild only
        print(f"{size_label(n)}: {db} holds its {n:,} events; rebuilding its rollups", flush=True)
        qb.SCHEMA = SCHEMA
        t0 = time.perf_counter()
        qb._rebuild(url)
        return True, _mark(url, n, float("nan"), time.perf_counter() - t0)
    free = shutil.disk_usage("/").free
    need = n * BYTES_PER_EVENT
    if free - need < MIN_FREE_BYTES:
        raise SystemExit(f"{size_label(n)}: {free / 2**30:.0f} GB free on /, the load needs about "
                         f"{need / 2**30:.0f} GB and {MIN_FREE_BYTES / 2**30:.0f} GB must stay free")
    print(f"{size_label(n)}: loading {db} ({free / 2**30:.0f} GB free, load average {loadavg()})", flush=True)
    qb._ensure_database(db, reuse=False)  # drops a half-loaded one
    qb.SCHEMA = SCHEMA
    qb._bootstrap(url, SCHEMA)
    t0 = time.perf_counter()
    qb._load(url, n, days)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    qb._rebuild(url)
    t_rebuild = time.perf_counter() - t0
    _mark(url, n, t_load, t_rebuild)
    print(f"{size_label(n)}: loaded in {t_load:.0f}s, rollups rebuilt in {t_rebuild:.0f}s "
          f"(load average {loadavg()})", flush=True)
    return True, (n, t_load, t_rebuild)


def measure(n: int, reps: int) -> tuple[dict[str, tuple[list[float], str]], str, str]:
    """{question: (times in ms, source)}, load average before and after."""
    from support import Server

    url = qb._url_for(db_name(n))
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{SCHEMA}, public",))
        (last,) = conn.execute("SELECT max(time) FROM events").fetchone()
    end = last.replace(hour=0, minute=0, second=0, microsecond=0)  # the last whole UTC day
    before = loadavg()
    srv = Server(url, SCHEMA, workers=2, env={"STATS_CACHE_TTL_SECONDS": "0", "LOG_LEVEL": "WARNING"},
                 log_path=Path(f"/tmp/bench-curve-{os.getpid()}.log")).start()
    out: dict[str, tuple[list[float], str]] = {}
    try:
        client = qb._Client(srv.url, srv.headers)
        try:
            floor, _ = qb._time_http(client, {"path": "/healthz"}, reps)
            out["(HTTP floor: GET /healthz)"] = (floor, "-")
            for q in qb._questions(end):
                times, body = qb._time_http(client, q, reps)
                source = body["meta"]["source"] if isinstance(body, dict) else "rollup (seed)"
                out[q["name"]] = (times, source)
        finally:
            client.close()
    finally:
        srv.stop()
    return out, before, loadavg()


def report(sizes: list[int], results: dict[int, dict], loads: dict[int, list[tuple[str, str]]],
           load_times: dict[int, tuple[float, float]]) -> bool:
    """Print the curve; True when it is flat (see the module docstring)."""
    base = sizes[0]
    print(f"\ndashboard latency against event count (HTTP, the questions of bench/query.py, cache off, "
          f"gunicorn 2 workers); median / p95 ms, and the median's ratio to {size_label(base)}")
    head = f"{'question':38s}" + "".join(f" {size_label(n) + ' med/p95':>17s} {'x':>5s}" for n in sizes)
    print(head)
    flat = True
    for name in results[base]:
        line = f"{name:38s}"
        for n in sizes:
            times = results[n][name][0]
            med, p95 = statistics.median(times), qb._pct(times, 0.95)
            base_med = statistics.median(results[base][name][0])
            ratio = med / base_med if base_med else float("nan")
            line += f" {med:8.1f}/{p95:7.1f} {ratio:5.2f}"
            if n == sizes[-1] and not name.startswith("(") and ratio > FLAT_RATIO:
                flat = False
        print(line)
    print("load average (1/5/15 min) before / after each size's rounds: " +
          "; ".join(f"{size_label(n)} " + ", ".join(f"{b} / {a}" for b, a in loads[n]) for n in sizes))
    print("load + rollup rebuild time of each database (when it was loaded): " +
          "; ".join(f"{size_label(n)} {load_times[n][0]:.0f}s + {load_times[n][1]:.0f}s" for n in sizes))
    sources = {n: sorted({v[1] for k, v in results[n].items() if not k.startswith("(")}) for n in sizes}
    print("answered from: " + "; ".join(f"{size_label(n)} {', '.join(s)}" for n, s in sources.items()))
    verdict = "flat" if flat else "NOT flat"
    print(f"curve {size_label(base)} -> {size_label(sizes[-1])}: {verdict} (no median above "
          f"{FLAT_RATIO}x the {size_label(base)} one)" if flat else
          f"curve {size_label(base)} -> {size_label(sizes[-1])}: {verdict}: some median is above "
          f"{FLAT_RATIO}x the {size_label(base)} one (see the x columns)")
    return flat


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench curve")
    ap.add_argument("--sizes", default="1M,10M,30M", help="comma-separated event counts, e.g. 1M,10M")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--reps", type=int, default=20, help="HTTP requests per question and round")
    ap.add_argument("--rounds", type=int, default=2, help="measuring rounds, in alternating size order")
    ap.add_argument("--keep", action="store_true", help="keep the databases this run loads")
    ap.add_argument("--load-only", action="store_true", help="load the databases, measure nothing")
    ap.add_argument("--drop", action="store_true", help="drop every size's database and exit")
    args = ap.parse_args(argv)
    sizes = sorted(parse_size(s) for s in args.sizes.split(",") if s.strip())
    if args.drop:
        for n in sizes:
            qb._drop_database(db_name(n))
        return 0
    loaded_now: list[int] = []
    load_times: dict[int, tuple[float, float]] = {}
    try:
        for n in sizes:
            fresh, (_, t_load, t_rebuild) = ensure_loaded(n, args.days)
            load_times[n] = (t_load, t_rebuild)
            qb.SCHEMA = SCHEMA
            print(f"{size_label(n)}:", end="")
            qb._sizes(qb._url_for(db_name(n)), n)  # disk per million events (scaling guide, section 2)
            if fresh:
                loaded_now.append(n)
        if args.load_only:
            return 0
        # Measured back to back after every load, in rounds whose order alternates (small to large,
        # large to small): a machine whose load changes meanwhile weighs on every size alike. The
        # figures are over every round's requests.
        results: dict[int, dict] = {n: {} for n in sizes}
        loads: dict[int, list] = {n: [] for n in sizes}
        for r in range(args.rounds):
            for n in (sizes if r % 2 == 0 else sizes[::-1]):
                got, before, after = measure(n, args.reps)
                for name, (times, source) in got.items():
                    results[n].setdefault(name, ([], source))[0].extend(times)
                loads[n].append((before, after))
                print(f"  measured {size_label(n)} (round {r + 1}, load average {before} -> {after})", flush=True)
        report(sizes, results, loads, load_times)
        return 0
    finally:
        if not args.keep:
            for n in loaded_now:
                qb._drop_database(db_name(n))
