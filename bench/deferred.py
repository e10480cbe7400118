"""`python -m bench deferred [--rounds N] [--seconds S]`: what folding into the rollups once a
second, instead of in every COMMIT, would give single events. By hand only (not in `make bench`).

Four servers on one fresh schema, the production gunicorn command, the ingest benchmark's
single-event load (64 connections) against each in turn:

- service: the service as it is (every COMMIT folds its events into the rollups and visits);
- deferred: bench/deferred_app.py, whose COMMIT only queues its rows in `pending_fold`, while a
  folder in this process folds the queue into the rollups and visits once a second with the
  service's own hook statements (`DELETE FROM pending_fold RETURNING *` feeding `ins`);
- nohooks: bench/nohooks.py, no fold at all (the COPY alone);
- floor: bench/floor.py.

It prints each one's rate and the CPU per request of its workers and of the database (the
folder's work is the database's), the folds' sizes and times, and at the end checks that the
rollups hold exactly the service's and the deferred server's events once the queue is empty.
Deferring the fold this way would leave the rollups up to a second behind the events: the read
side would have to add the queue (a raw tail) to stay exact at acknowledgement, which this
benchmark does not build.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from bench import cpusplit, ingest  # ingest puts src/ and tests/ on sys.path
from bench.ingest import ROOT
from support import Server, database_url, drop_schema, new_schema_name  # noqa: E402


def _folder(url: str, schema: str, stop: threading.Event, folds: list[tuple[int, float]]) -> None:
    from analytics.ingestion.repository import hook_ctes
    from analytics.rollups import maintain, visits

    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SELECT set_config('search_path', {}, false)").format(
            sql.Literal(f'"{schema}", public')))
        conn.commit()
        stmt = sql.SQL("WITH {} SELECT count(*) FROM staged").format(sql.SQL(", ").join(
            [sql.SQL("staged AS (DELETE FROM pending_fold RETURNING *)"), sql.SQL("ins AS (SELECT * FROM staged)"),
             *hook_ctes([maintain.ingest_statements, visits.ingest_hook])]))
        while True:
            t = time.perf_counter()
            (n,) = conn.execute(stmt).fetchone()
            conn.commit()
            if n:
                folds.append((n, time.perf_counter() - t))
            if stop.is_set():
                return  # after a last fold: the queue is empty
            stop.wait(max(0.0, 1.0 - (time.perf_counter() - t)))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench deferred")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    url, schema = database_url(), new_schema_name("bench_deferred")
    work = Path(tempfile.mkdtemp(prefix="bench-deferred-"))
    (work / "acks").mkdir()
    lua = ingest.write_lua(work / "single.lua", ingest._LUA_SINGLE, work / "acks")
    bench_env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "ACCESS_LOG": "true"}
    servers: dict[str, Server] = {}
    stop, folds = threading.Event(), []
    folder = None
    nohooks_stored = 0  # their events are in no rollup
    try:
        servers["service"] = Server(url, schema, workers=2, env={"ACCESS_LOG": "true"}, log_path=work / "s.log").start()
        ingest.wait_all_workers_ready(servers["service"])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(schema, "pending_fold"), sql.Identifier(schema, "events")))
        for name, app in (("deferred", "bench.deferred_app:app"), ("nohooks", "bench.nohooks:app"),
                          ("floor", "bench.floor:app")):
            servers[name] = Server(url, schema, workers=2, app=app, env=bench_env, keys=name != "floor",
                                   log_path=work / f"{name}.log").start()
            ingest.wait_all_workers_ready(servers[name])
        folder = threading.Thread(target=_folder, args=(url, schema, stop, folds), daemon=True)
        folder.start()
        wrk = ingest.ensure_wrk()
        print(f"[bench] deferred: schema {schema}, {args.rounds} rounds x {args.seconds:.0f} s per server", flush=True)
        for _ in range(args.rounds):
            for name, srv in servers.items():
                folds.clear()
                stored_before = ingest.count_events(url, schema)
                before = cpusplit.snapshot(srv.proc.pid)
                run = ingest.run_wrk(wrk, srv.url + "/api/events/", lua, 64, args.seconds)
                if name == "deferred":
                    time.sleep(1.2)  # its last fold, in the database's CPU
                cpu = cpusplit.per_request(before, cpusplit.snapshot(srv.proc.pid), run["requests"])
                fold = (f"; {len(folds)} folds, median {statistics.median(n for n, _ in folds):,.0f} events in "
                        f"{statistics.median(t for _, t in folds) * 1000:.0f} ms" if name == "deferred" and folds else "")
                print(f"  {name:8} {run['rate']:>7,.0f} req/s  p99 {run['p99']:>5.0f} ms  {cpusplit.line(cpu)}{fold}",
                      flush=True)
                ingest.read_acks(work / "acks")
                if name == "nohooks":  # what it stored, also what wrk left unacknowledged at its end
                    time.sleep(0.5)
                    nohooks_stored += ingest.count_events(url, schema) - stored_before
    finally:
        stop.set()
        if folder is not None:
            folder.join(30)
        for srv in servers.values():
            srv.stop()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("SELECT set_config('search_path', {}, false)").format(sql.Literal(f'"{schema}", public')))
            pending = conn.execute("SELECT count(*) FROM pending_fold").fetchone()[0]
            folded = conn.execute("SELECT coalesce(sum(events), 0) FROM rollup_agg_total_1d").fetchone()[0]
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        drop_schema(url, schema)
    expected = stored - nohooks_stored
    ok = pending == 0 and folded == expected
    print(f"[bench] queue left {pending}; events in the rollups {folded:,}, stored by service and deferred "
          f"{expected:,}: {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1
