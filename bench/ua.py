"""User-agent benchmark: `python -m bench ua`. About a minute.

Issue 9 saw a batch of 1,000 events with 1,000 distinct 1 KB user agents take 8 s of a worker
(user-agents' pure-Python parse on the event loop). In its own schema (dropped at the end), this
starts the service with its production command (gunicorn + one uvicorn worker, so that /readyz
answers from the worker that took the load), and then the same service with the old parser
(bench/legacy_ua_app.py), and for each prints:

  - the time of each POST /api/events/batch: 1,000 events with one user agent (the cached path,
    the floor), 1,000 distinct real user agents (real length), 1,000 events with 1,000 distinct
    ~1 KB realistic user agents;
  - the longest stall of the worker's event loop during each request: /readyz's
    `process.loop_lag_recent_ms` (the last 10 s) read right after it, the requests 11 s apart;
  - `loop_lag_max_ms` and the worker's RSS after all three;

then the old/new ratios, and the classification alone in this process (no HTTP, CPU time):
the new classify against user-agents' own parse on the same strings, uncached.

Options: --keep (do not drop the schema), --rounds N (the in-process part's rounds, default 3;
each figure the best).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import httpx  # noqa: E402

from support import Server, database_url, drop_schema, new_schema_name  # noqa: E402
from ua_corpus import long_user_agents, real_corpus  # noqa: E402

WINDOW_S = 11  # /readyz's loop_lag_recent_ms covers the last 10 s
COMMON_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/124.0.0.0 Safari/537.36")
WARMUP_S = 6  # the loop-lag monitor ignores a worker's first 5 s


def workloads(seed: int) -> dict[str, list[str]]:
    """Each variant of the service gets strings it has never seen (its cache must not help)."""
    import random
    real = list(real_corpus())
    random.Random(seed).shuffle(real)
    return {"one user agent (cached)": [COMMON_UA] * 1000,
            "1,000 distinct real user agents": real[:1000],
            "1,000 distinct ~1 KB user agents": long_user_agents(1000, seed=seed)}


def run_server(url: str, schema: str, app: str, seed: int, log: Path) -> dict:
    srv = Server(url, schema, workers=1, app=app, log_path=log,
                 env={"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"})
    srv.start(timeout=120)
    out: dict = {"requests": {}}
    try:
        time.sleep(WARMUP_S)
        with httpx.Client(base_url=srv.url, headers=srv.admin_headers, timeout=120) as c:  # /readyz details: admin
            for name, uas in workloads(seed).items():
                run = uuid.uuid4().hex[:8]
                body = [{"page": f"/bench-ua/{run}/{i}", "user_agent": ua} for i, ua in enumerate(uas)]
                t0 = time.perf_counter()
                r = c.post("/api/events/batch", json=body)
                elapsed = time.perf_counter() - t0
                if r.status_code != 201:
                    raise RuntimeError(f"{app}: {name}: {r.status_code} {r.text[:300]}")
                lag = c.get("/readyz").json()["process"]["loop_lag_recent_ms"]
                out["requests"][name] = (elapsed, lag)
                time.sleep(WINDOW_S)  # the next request's lag is its own
            process = c.get("/readyz").json()["process"]
        out.update(lag_ms=process["loop_lag_max_ms"], rss=process["rss_bytes"])
    finally:
        srv.stop()
    return out


def classify_alone(rounds: int) -> list[tuple[str, float, float, float, float]]:
    """CPU seconds to classify 1,000 distinct strings, uncached, and the slowest string, new
    and old, each the best of `rounds` rounds on new strings (the RE2 caches warm up on what
    they saw): (workload, new total, new worst, old total, old worst)."""
    import random
    from analytics.ingestion.enrich import classify, classify_reference, resolver
    resolver()
    real = list(real_corpus())
    rng = random.Random(3)
    hostile = [("x" * 300 + " " + " ".join(rng.sample(real, 8)))[:1024] for _ in range(999)]
    hostile.append(";" * 1024)
    rows = []
    for name, make in (("1,000 distinct real user agents", lambda r: real[-1000 * (r + 1):][:1000]),
                       ("1,000 distinct ~1 KB user agents", lambda r: long_user_agents(1000, seed=101 + r)),
                       ("1,000 hostile 1 KB strings", lambda r: [f"{r} {ua}"[:1024] for ua in hostile])):
        row: list = [name]
        for fn in (classify, classify_reference):
            best = (float("inf"), 0.0)
            for r in range(rounds):
                total = worst = 0.0
                for ua in make(r):
                    t0 = time.process_time()
                    fn(ua)
                    spent = time.process_time() - t0
                    total, worst = total + spent, max(worst, spent)
                best = min(best, (total, worst))
            row += list(best)
        rows.append(tuple(row))
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ua")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the in-process part (best)")
    args = ap.parse_args(argv)
    url, schema = database_url(), new_schema_name("bench_ua")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-ua-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    print(f"user agents: schema {schema}, logs in {work}")
    try:
        new = run_server(url, schema, "main:app", seed=1, log=work / "new.log")
        old = run_server(url, schema, "bench.legacy_ua_app:app", seed=2, log=work / "old.log")
    finally:
        if not args.keep:
            drop_schema(url, schema)
    print(f"POST /api/events/batch, 1,000 events    {'new: time':>10s} {'loop lag':>9s}"
          f" {'old: time':>10s} {'loop lag':>9s} {'old/new':>8s}")
    for name in new["requests"]:
        (a, lag_a), (b, lag_b) = new["requests"][name], old["requests"][name]
        print(f"  {name:38s} {a * 1000:8.0f}ms {lag_a:7.0f}ms {b * 1000:8.0f}ms {lag_b:7.0f}ms"
              f" {b / a:7.1f}x")
    print(f"  {'worker: loop_lag_max_ms after all':38s} {'':10s} {new['lag_ms']:7.0f}ms {'':10s}"
          f" {old['lag_ms']:7.0f}ms")
    print(f"  {'worker: RSS after all':38s} {new['rss'] / 2**20:8.0f}MB {'':9s}"
          f" {old['rss'] / 2**20:8.0f}MB")
    print(f"classify alone, in-process, uncached    {'new: CPU':>10s} {'worst':>9s}"
          f" {'old: CPU':>10s} {'worst':>9s} {'old/new':>8s}   (best of {args.rounds})")
    for name, new_total, new_worst, old_total, old_worst in classify_alone(args.rounds):
        print(f"  {name:38s} {new_total * 1000:8.0f}ms {new_worst * 1000:7.1f}ms"
              f" {old_total * 1000:8.0f}ms {old_worst * 1000:7.1f}ms {old_total / new_total:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
