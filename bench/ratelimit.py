"""`python -m bench ratelimit`: what the rate limiter (web/ratelimit.py) costs, measured in one run.

Servers with the production command (2 workers each) and the same settings but the limiter:
`on` (memory storage, limits far above the load, so every request is counted and none refused)
and `off` (RATE_LIMIT_ENABLED=false); with `--redis URL`, also `redis` (the same limits, counters
in that Redis). The same wrk loads in alternating rounds: single-event POSTs (64 connections) and a
dashboard read (GET /api/v1/stats/totals, 16 connections, stats cache off). Each figure is the
best of its rounds; on/off is what the limiter costs. On 2 shared cores throughput moves with
whatever else runs, so each load also reports the CPU time the server's workers spent per
request (from /proc), which others' load disturbs much less.

`--keys`: the limiter alone, in-process, with 1 to 100,000 other clients already counted:
limits' own MemoryStorage against ours (web/ratelimit.py MemoryCounters), same run.

Every other benchmark runs its servers with the limiter on and high limits (tests/support.py
HIGH_RATE_LIMITS), so their figures include its cost.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from . import cpusplit
from .fastpath import _LUA_GET
from .ingest import _LUA_SINGLE, _loadavg, ensure_wrk, run_wrk, wait_all_workers_ready, write_lua
from support import Server, database_url, drop_schema  # noqa: E402 (bench.ingest puts tests/ on the path)
from support import new_schema_name  # noqa: E402

LOADS = (("POST /api/events/", "single", "/api/events/", 64),
         ("GET /api/v1/stats/totals", "get", "/api/v1/stats/totals", 16))


def _workers_cpu_s(srv: Server) -> float:
    """User + system CPU seconds of the server's worker processes (the master's children)."""
    return cpusplit.snapshot(srv.proc.pid).workers


async def _per_hit_us(storage, others: int, n: int = 3000) -> float:
    from limits import parse_many
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    items = parse_many("1000/10 seconds;20000/hour")
    limiter = SlidingWindowCounterRateLimiter(storage)
    for k in range(others):
        for item in items:
            await limiter.hit(item, "ingest", f"10.{k >> 16}.{(k >> 8) & 255}.{k & 255}")
    t = time.perf_counter()
    for _ in range(n):
        for item in items:
            await limiter.hit(item, "ingest", "127.0.0.1")
        await asyncio.sleep(0)  # a turn of the event loop, as between two requests
    return (time.perf_counter() - t) / n * 1e6


def keys_main() -> int:
    from limits.aio.storage import MemoryStorage

    from analytics.web.ratelimit import MemoryCounters

    print("clients counted   limits MemoryStorage   MemoryCounters   (us per request, 2 windows, "
          "incl. one event-loop turn)")
    for others in (0, 1_000, 10_000, 100_000):
        theirs = asyncio.run(_per_hit_us(MemoryStorage(), others, 300 if others >= 10_000 else 3000))
        ours = asyncio.run(_per_hit_us(MemoryCounters(), others))
        print(f"{others:15,d}   {theirs:20,.1f}   {ours:14,.1f}")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ratelimit")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis", default="", help="also measure counters in this Redis (redis://…)")
    ap.add_argument("--keys", action="store_true", help="the in-process storages alone (see above)")
    args = ap.parse_args(argv)
    if args.keys:
        return keys_main()

    wrk = ensure_wrk()
    url = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    ackdir = work / "acks"
    ackdir.mkdir()
    scripts = {"single": write_lua(work / "single.lua", _LUA_SINGLE, ackdir)}
    modes = {"on": {}, "off": {"RATE_LIMIT_ENABLED": "false"}}
    if args.redis:
        modes["redis"] = {"RATE_LIMIT_STORAGE_URL": args.redis}
    print(f"[bench] ratelimit: {os.cpu_count()} cores, load average {_loadavg()}", flush=True)
    servers: dict[str, Server] = {}
    best: dict[tuple[str, str], dict] = {}
    cpu_us: dict[tuple[str, str], list[float]] = {}
    try:
        for mode, env in modes.items():
            srv = Server(url, new_schema_name(f"bench_rl_{mode}"), workers=2, log_path=work / f"{mode}.log",
                         env={"STATS_CACHE_TTL_SECONDS": "0", **env})
            servers[mode] = srv.start()
            wait_all_workers_ready(srv)
        # Reads need a key (issue 10): each server's own read key.
        gets = {}
        for mode, srv in servers.items():
            gets[mode] = work / f"get-{mode}.lua"
            gets[mode].write_text(_LUA_GET + f'wrk.headers["Authorization"] = "Bearer {srv.key["read"]}"\n')
        for _ in range(args.rounds):
            for mode, srv in servers.items():
                for load, script, path, conns in LOADS:
                    cpu = _workers_cpu_s(srv)
                    r = run_wrk(wrk, srv.url + path, scripts.get(script) or gets[mode], conns, args.seconds)
                    r["cpu_us"] = (_workers_cpu_s(srv) - cpu) / max(1, r["requests"]) * 1e6
                    cpu_us.setdefault((load, mode), []).append(r["cpu_us"])
                    non2xx = r.get("non2xx", 0)
                    if non2xx:
                        print(f"[bench] {mode} {load}: {non2xx} answers were not 2xx", flush=True)
                    if r["rate"] > best.get((load, mode), {}).get("rate", -1):
                        best[(load, mode)] = r
    finally:
        for srv in servers.values():
            srv.stop()
            drop_schema(url, srv.env["DB_SCHEMA"])
    for load, *_ in LOADS:
        off = best[(load, "off")]
        line = f"{load:26s} off {off['rate']:8,.0f} req/s p99 {off['p99']:6.1f} ms"
        for mode in modes:
            if mode != "off":
                r = best[(load, mode)]
                line += (f"   {mode} {r['rate']:8,.0f} req/s p99 {r['p99']:6.1f} ms"
                         f" ({mode}/off = {r['rate'] / off['rate']:.3f})")
        print(line)
    for load, *_ in LOADS:  # the median of the rounds: CPU per request is steadier than rates
        cpu = {mode: sorted(cpu_us[(load, mode)])[len(cpu_us[(load, mode)]) // 2] for mode in modes}
        print(f"{load:26s} worker CPU per request: " + "   ".join(
            f"{mode} {us:6.0f} us" + (f" ({us - cpu['off']:+.0f} us)" if mode != "off" else "")
            for mode, us in cpu.items()))
    return 0
