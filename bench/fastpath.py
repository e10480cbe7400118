"""`python -m bench fastpath`: what the fast paths (web/fastpath.py) buy, measured in one run.

Two servers with the production command (2 workers each) and the same settings but FAST_PATHS,
each on its own schema; the same wrk loads in alternating rounds against one, then the other:
single-event POSTs (64 connections) and a dashboard read (GET /api/v1/stats/totals, 16
connections, stats cache off so every answer runs its query). Each figure is the best of its
rounds; the ratio fast/plain is what the fast path is worth (issue 9: the fast paths stay only
if FastAPI's routing is more than 10% slower).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from .ingest import _LUA_SINGLE, _loadavg, ensure_wrk, run_wrk, wait_all_workers_ready, write_lua
from support import Server, database_url, drop_schema  # noqa: E402 (bench.ingest puts tests/ on the path)
from support import new_schema_name  # noqa: E402

_LUA_GET = r"""
wrk.method = "GET"
"""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench fastpath")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    wrk = ensure_wrk()
    url = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-fastpath-"))
    ackdir = work / "acks"
    ackdir.mkdir()
    single = write_lua(work / "single.lua", _LUA_SINGLE, ackdir)
    print(f"[bench] fastpath: {os.cpu_count()} cores, load average {_loadavg()}", flush=True)
    servers: dict[str, Server] = {}
    best: dict[tuple[str, str], dict] = {}
    try:
        for mode in ("fast", "plain"):
            srv = Server(url, new_schema_name(f"bench_fp_{mode}"), workers=2, log_path=work / f"{mode}.log",
                         env={"FAST_PATHS": str(mode == "fast").lower(), "STATS_CACHE_TTL_SECONDS": "0"})
            servers[mode] = srv.start()
            wait_all_workers_ready(srv)
        gets = {}
        for mode, srv in servers.items():  # each with its server's read key, as a dashboard sends it
            gets[mode] = work / f"get-{mode}.lua"
            gets[mode].write_text(_LUA_GET + f'wrk.headers["Authorization"] = "Bearer {srv.key["read"]}"\n')
        for _ in range(args.rounds):
            for mode, srv in servers.items():
                for load, script, path, conns in (("POST /api/events/", single, "/api/events/", 64),
                                                  ("GET /api/v1/stats/totals", gets[mode], "/api/v1/stats/totals", 16)):
                    r = run_wrk(wrk, srv.url + path, script, conns, args.seconds)
                    if r["rate"] > best.get((load, mode), {}).get("rate", -1):
                        best[(load, mode)] = r
    finally:
        for srv in servers.values():
            srv.stop()
            drop_schema(url, srv.env["DB_SCHEMA"])
    for load in ("POST /api/events/", "GET /api/v1/stats/totals"):
        f, p = best[(load, "fast")], best[(load, "plain")]
        print(f"{load:26s} fast {f['rate']:8,.0f} req/s p99 {f['p99']:6.1f} ms   "
              f"plain {p['rate']:8,.0f} req/s p99 {p['p99']:6.1f} ms   fast/plain = {f['rate'] / p['rate']:.2f}")
    return 0
