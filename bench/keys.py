"""`python -m bench keys`: what checking an API key costs (issue 10), measured in one run.

One server with the production command (2 workers), PUBLIC_READS=true so that the same routes
answer with and without a key, stats cache off so every read runs its query. The same wrk loads
in alternating rounds, with and without a key: single-event POSTs (64 connections; an `ingest`
key, or none, as a browser sends) and a dashboard read (GET /api/v1/stats/totals, 16
connections; a `read` key, or none). Each figure is the best of its rounds; keyed/open is what
the check costs (a header lookup, a SHA-256, a dict lookup and the principal in the scope).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from .ingest import _LUA_SINGLE, _loadavg, ensure_wrk, run_wrk, wait_all_workers_ready, write_lua
from support import Server, database_url, drop_schema, new_schema_name  # noqa: E402 (bench.ingest: tests/ on the path)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench keys")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    wrk = ensure_wrk()
    url = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    ackdir = work / "acks"
    ackdir.mkdir()
    print(f"[bench] keys: {os.cpu_count()} cores, load average {_loadavg()}", flush=True)
    srv = Server(url, new_schema_name("bench_keys"), workers=2, log_path=work / "server.log",
                 env={"PUBLIC_READS": "true", "STATS_CACHE_TTL_SECONDS": "0"})
    best: dict[tuple[str, str], dict] = {}
    try:
        srv.start()
        wait_all_workers_ready(srv)
        auth = {scope: f'wrk.headers["Authorization"] = "Bearer {srv.key[scope]}"\n' for scope in ("read", "ingest")}
        scripts = {
            ("POST /api/events/", "open"): write_lua(work / "single.lua", _LUA_SINGLE, ackdir),
            ("POST /api/events/", "key"): write_lua(work / "single-key.lua", _LUA_SINGLE + auth["ingest"], ackdir),
            ("GET /api/v1/stats/totals", "open"): work / "get.lua",
            ("GET /api/v1/stats/totals", "key"): work / "get-key.lua",
        }
        scripts[("GET /api/v1/stats/totals", "open")].write_text('wrk.method = "GET"\n')
        scripts[("GET /api/v1/stats/totals", "key")].write_text('wrk.method = "GET"\n' + auth["read"])
        for _ in range(args.rounds):
            for (load, how), script in scripts.items():
                path, conns = load.split()[1], (64 if load.startswith("POST") else 16)
                r = run_wrk(wrk, srv.url + path, script, conns, args.seconds)
                assert r["non2xx"] == 0, r["raw"]
                if r["rate"] > best.get((load, how), {}).get("rate", -1):
                    best[(load, how)] = r
    finally:
        srv.stop()
        drop_schema(url, srv.env["DB_SCHEMA"])
    for load in ("POST /api/events/", "GET /api/v1/stats/totals"):
        k, o = best[(load, "key")], best[(load, "open")]
        print(f"{load:26s} key {k['rate']:8,.0f} req/s p99 {k['p99']:6.1f} ms   "
              f"open {o['rate']:8,.0f} req/s p99 {o['p99']:6.1f} ms   key/open = {k['rate'] / o['rate']:.3f}")
    return 0
