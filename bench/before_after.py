"""`python -m bench before_after [--base REV | --switches-off]`: this tree against an earlier
version, same run.

Issue 10 asks that keys, rate limits, visitor hashing and metrics leave the single-event and
dashboard figures within 10% of before; issue 11, that its work leaves ingest and the dashboard
within 10%. Two servers with the production command (2 workers each), each on its own schema:
the earlier version (default: the end of issue 9, before any of issue 10) from `git archive`,
and this tree with its defaults (reads with a read key, the rate limiter on with limits no load
reaches, metrics on, no IP stored, a visitor hash per event). `--switches-off` compares this
tree with itself, those switched off where a setting can (rate limits, metrics, read keys):
their cost alone, without what issues 11 and 12 added to every event since. `--issue-10-off`
also leaves out issue 10's database work (the unique-visitor state and its `vis` rollups,
bench/without10.py): all that issue 10 costs this tree, but the visitor hash.

The same wrk loads in alternating rounds: single-event POSTs (64 connections), batches of 1,000
events (4 connections) and a dashboard read (GET /api/v1/stats/totals, 16 connections, stats
cache off so every answer runs its query). Each figure is the best of its rounds; now/before is
the ratio. Then, for each load, the median CPU per request of the workers and of the database
(bench/cpusplit.py; the other server idles meanwhile), steadier than rates on a shared machine,
and how much of the cores the host took (steal).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from .ingest import _LUA_BATCH, _LUA_SINGLE, _loadavg, ensure_wrk, run_wrk, wait_all_workers_ready, write_lua
from . import cpusplit
from support import ROOT, Server, database_url, drop_schema  # noqa: E402 (bench.ingest puts tests/ on the path)
from support import HIGH_RATE_LIMITS, new_schema_name  # noqa: E402

# The last commit of issue 9 (hardening), before keys, privacy, rate limits and metrics.
BASE = "19a3d17"
# The last commit before issue 11 (catalog, event fields, geo, visits, tracker, dashboard):
# `--base 1f2d5c4` measures what issue 11 costs.
BASE_ISSUE_11 = "1f2d5c4"

# --switches-off: issue 10's per-request work that a setting turns off. (The visitor hash and the
# access log's client hash have no switch: privacy by default; the ingest guard is a few
# attribute reads when INGEST_KEY_REQUIRED and INGEST_ALLOWED_HOSTS are unset, as here.)
SWITCHES_OFF = {"RATE_LIMIT_INGEST": "off", "RATE_LIMIT_READ": "off", "METRICS_ENABLED": "false",
                "PUBLIC_READS": "true"}

_LUA_GET = r"""
wrk.method = "GET"
"""


# (name, wrk script, path, connections): single events; batches of 1,000 (4 connections, as
# `bench ingest` (b): a request per second is 1,000 events); the dashboard's totals.
LOADS = (("POST /api/events/", "single", "/api/events/", 64),
         ("POST /api/events/batch", "batch", "/api/events/batch", 4),
         ("GET /api/v1/stats/totals", "get", "/api/v1/stats/totals", 16))


def _tree(rev: str, into: Path) -> Path:
    """src/ and boot/ of `rev`, extracted (the running tree is not touched)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src", "boot"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench before_after")
    ap.add_argument("--base", default=BASE, help="the earlier version (a git revision)")
    ap.add_argument("--now", default=None,
                    help="'now' is this git revision instead of the working tree: e.g. --base 19a3d17 "
                         "--now 1f2d5c4 measures issue 10 alone, before issue 11 added to every event")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=sorted({kind for _, kind, _, _ in LOADS}), action="append",
                    help="run only this load (repeatable): e.g. --only batch, for more rounds of it")
    ap.add_argument("--issue-10-off", action="store_true",
                    help="as --switches-off, and 'before' also maintains no unique-visitor state or "
                         "rollups (bench/without10.py): what issue 10 costs this tree")
    ap.add_argument("--switches-off", action="store_true",
                    help="'before' is this tree with issue 10's per-request work switched off (rate "
                         "limits, metrics, read keys): what those cost, apart from what later issues "
                         "added to every event (fields, rollups, visits)")
    args = ap.parse_args(argv)
    args.switches_off = args.switches_off or args.issue_10_off
    loads = [ld for ld in LOADS if not args.only or ld[1] in args.only]

    wrk = ensure_wrk()
    url = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-before-after-"))
    ackdir = work / "acks"
    ackdir.mkdir()
    single = write_lua(work / "single.lua", _LUA_SINGLE, ackdir)
    batch = write_lua(work / "batch.lua", _LUA_BATCH, ackdir)  # 1,000 events per request
    base_tree = ROOT if args.switches_off else _tree(args.base, work / "base")
    now_tree = _tree(args.now, work / "now") if args.now else ROOT
    switched = "this tree with " + " ".join(f"{k}={v}" for k, v in SWITCHES_OFF.items())
    if args.issue_10_off:
        switched += " and no unique-visitor state or rollups (bench/without10.py)"
    print(f"[bench] before_after: {os.cpu_count()} cores, load average {_loadavg()}, before = "
          + (switched if args.switches_off else args.base) + f", now = {args.now or 'this tree'}", flush=True)
    common = {"STATS_CACHE_TTL_SECONDS": "0"}
    servers: dict[str, Server] = {}
    best: dict[tuple[str, str], dict] = {}
    cpu_us: dict[tuple[str, str], list[dict]] = {}  # CPU split per request (bench/cpusplit.py)
    try:
        # A version with API keys (issue 10 on) reads with a read key, as this one does.
        base_has_keys = (base_tree / "src" / "analytics" / "auth" / "keys.py").exists() and not args.switches_off
        base_env = ({**common, **SWITCHES_OFF} if args.switches_off
                    else {**common, **HIGH_RATE_LIMITS} if base_has_keys else common)
        base_app = "main:app"
        if args.issue_10_off:
            base_app = "bench.without10:app"
            base_env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
        servers["before"] = Server(url, new_schema_name("bench_ba_before"), workers=2, root=base_tree,
                                   app=base_app, keys=base_has_keys, log_path=work / "before.log",
                                   env=base_env).start()
        # The limits of this tree are on, as in production, with amounts no load here reaches.
        servers["now"] = Server(url, new_schema_name("bench_ba_now"), workers=2, root=now_tree,
                                log_path=work / "now.log", env={**common, **HIGH_RATE_LIMITS}).start()
        for srv in servers.values():
            wait_all_workers_ready(srv)
        gets = {}
        for name, srv in servers.items():
            gets[name] = work / f"get-{name}.lua"
            auth = f'wrk.headers["Authorization"] = "Bearer {srv.key["read"]}"\n' if "read" in srv.key else ""
            gets[name].write_text(_LUA_GET + auth)
        for _ in range(args.rounds):
            for name, srv in servers.items():
                scripts = {"single": single, "batch": batch, "get": gets[name]}
                for load, kind, path, conns in loads:
                    cpu = cpusplit.snapshot(srv.proc.pid)
                    r = run_wrk(wrk, srv.url + path, scripts[kind], conns, args.seconds)
                    cpu_us.setdefault((load, name), []).append(
                        cpusplit.per_request(cpu, cpusplit.snapshot(srv.proc.pid), r["requests"]))
                    if r["rate"] > best.get((load, name), {}).get("rate", -1):
                        best[(load, name)] = r
    finally:
        for srv in servers.values():
            srv.stop()
            drop_schema(url, srv.env["DB_SCHEMA"])
    for load, *_ in loads:
        b, n = best[(load, "before")], best[(load, "now")]
        print(f"{load:26s} before {b['rate']:8,.0f} req/s p99 {b['p99']:6.1f} ms   "
              f"now {n['rate']:8,.0f} req/s p99 {n['p99']:6.1f} ms   now/before = {n['rate'] / b['rate']:.2f}   "
              f"(non-2xx: before {b['non2xx']}, now {n['non2xx']})")
    for load, *_ in loads:  # medians: steadier than rates (the other server idles meanwhile)
        for part, label in (("workers", "workers'"), ("database", "database")):
            b, n = (sorted(s[part] for s in cpu_us[(load, k)])[len(cpu_us[(load, k)]) // 2]
                    for k in ("before", "now"))
            print(f"{load:26s} {label:9s} CPU per request: before {b:5.0f} us   now {n:5.0f} us   "
                  f"now/before = {n / b:.2f}" if b > 0 else f"{load:26s} {label} CPU: n/a")
    stolen = [s["stolen_share"] for v in cpu_us.values() for s in v]
    if stolen:
        print(f"CPU taken by the host during the loads (steal): {min(stolen):.0%} to {max(stolen):.0%}")
    return 0
