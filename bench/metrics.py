"""`python -m bench metrics`: what the Prometheus metrics (web/metrics.py) cost, measured in one run.

Two servers with the production command (2 workers each, fast paths on) and the same settings but
METRICS_ENABLED, each on its own schema; the same wrk loads in alternating rounds against one,
then the other: single-event POSTs (64 connections) and a dashboard read (GET
/api/v1/stats/totals, 16 connections, stats cache off so every answer runs its query). Each
figure is the best of its rounds; on/off is what the metrics cost (issue 10: within 10%).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from .fastpath import _LUA_GET
from .ingest import _LUA_SINGLE, _loadavg, ensure_wrk, run_wrk, wait_all_workers_ready, write_lua
from support import Server, database_url, drop_schema  # noqa: E402 (bench.ingest puts tests/ on the path)
from support import new_schema_name  # noqa: E402

LOADS = (("POST /api/events/", "single", "/api/events/", 64),
         ("GET /api/v1/stats/totals", "get", "/api/v1/stats/totals", 16))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench metrics")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    wrk = ensure_wrk()
    url = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    ackdir = work / "acks"
    ackdir.mkdir()
    scripts = {"single": write_lua(work / "single.lua", _LUA_SINGLE, ackdir), "get": work / "get.lua"}
    scripts["get"].write_text(_LUA_GET)
    print(f"[bench] metrics: {os.cpu_count()} cores, load average {_loadavg()}", flush=True)
    servers: dict[str, Server] = {}
    best: dict[tuple[str, str], dict] = {}
    try:
        for mode in ("on", "off"):
            srv = Server(url, new_schema_name(f"bench_metrics_{mode}"), workers=2, log_path=work / f"{mode}.log",
                         env={"METRICS_ENABLED": str(mode == "on").lower(), "STATS_CACHE_TTL_SECONDS": "0"})
            servers[mode] = srv.start()
            wait_all_workers_ready(srv)
        for _ in range(args.rounds):
            for mode, srv in servers.items():
                for load, script, path, conns in LOADS:
                    r = run_wrk(wrk, srv.url + path, scripts[script], conns, args.seconds)
                    if r["rate"] > best.get((load, mode), {}).get("rate", -1):
                        best[(load, mode)] = r
    finally:
        for srv in servers.values():
            srv.stop()
            drop_schema(url, srv.env["DB_SCHEMA"])
    for load, *_ in LOADS:
        on, off = best[(load, "on")], best[(load, "off")]
        print(f"{load:26s} metrics on {on['rate']:8,.0f} req/s p99 {on['p99']:6.1f} ms   "
              f"off {off['rate']:8,.0f} req/s p99 {off['p99']:6.1f} ms   on/off = {on['rate'] / off['rate']:.2f}")
    return 0
