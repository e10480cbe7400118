"""User-agent benchmark: `python -m bench ua`. About a minute.

Issue 9 saw a batch of 1,000 events with 1,000 distinct 1 KB user agents take 8 s of a worker
(user-agents' pure-Python parse on the event loop). In its own schema (dropped at the end), this
starts the service with its production command (gunicorn + one uvicorn worker, so that /readyz
answers from the worker that took the load), and then the same service with the old parser
(bench/legacy_ua_app.py), and for each prints:

  - the time of each POST /api/events/batch: 1,000 events with 1,000 distinct ~1 KB realistic
    user agents; 1,000 distinct real user agents (real length); 1,000 events with one user agent
    (the cached path, the floor);
  - the worker's event-loop lag from /readyz after them (`process.loop_lag_max_ms`) and its RSS;

then the old/new ratios, and the classification alone in this process (no HTTP): the new
classify against user-agents' own parse on the same strings, uncached.

Options: --keep (do not drop the schema).
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

COMMON_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/124.0.0.0 Safari/537.36")
WARMUP_S = 6  # the loop-lag monitor ignores a worker's first 5 s


def workloads(seed: int) -> dict[str, list[str]]:
    """Each variant of the service gets strings it has never seen (its cache must not help)."""
    import random
    real = list(real_corpus())
    random.Random(seed).shuffle(real)
    return {"1,000 distinct ~1 KB user agents": long_user_agents(1000, seed=seed),
            "1,000 distinct real user agents": real[:1000],
            "1,000 events, one user agent": [COMMON_UA] * 1000}


def run_server(url: str, schema: str, app: str, seed: int, log: Path) -> dict:
    srv = Server(url, schema, workers=1, app=app, log_path=log,
                 env={"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"})
    srv.start(timeout=120)
    out: dict = {"requests": {}}
    try:
        time.sleep(WARMUP_S)
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for name, uas in workloads(seed).items():
                run = uuid.uuid4().hex[:8]
                body = [{"page": f"/bench-ua/{run}/{i}", "user_agent": ua} for i, ua in enumerate(uas)]
                t0 = time.perf_counter()
                r = c.post("/api/events/batch", json=body)
                elapsed = time.perf_counter() - t0
                if r.status_code != 201:
                    raise RuntimeError(f"{app}: {name}: {r.status_code} {r.text[:300]}")
                out["requests"][name] = elapsed
            process = c.get("/readyz").json()["process"]
        out.update(lag_ms=process["loop_lag_max_ms"], rss=process["rss_bytes"])
    finally:
        srv.stop()
    return out


def classify_alone() -> tuple[float, float, float, float]:
    """Seconds to classify 1,000 distinct ~1 KB and 1,000 distinct real user agents, uncached:
    (new long, old long, new real, old real)."""
    from analytics.ingestion.enrich import classify, classify_reference, resolver
    resolver()
    long_uas, real = long_user_agents(1000, seed=101), list(real_corpus())[:1000]
    times = []
    for uas in (long_uas, real):
        for fn in (classify, classify_reference):
            t0 = time.perf_counter()
            for ua in uas:
                fn(ua)
            times.append(time.perf_counter() - t0)
    return times[0], times[1], times[2], times[3]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ua")
    ap.add_argument("--keep", action="store_true")
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
    print(f"{'POST /api/events/batch':40s} {'new':>9s} {'old':>9s} {'old/new':>8s}")
    for name in new["requests"]:
        a, b = new["requests"][name], old["requests"][name]
        print(f"  {name:38s} {a * 1000:7.0f}ms {b * 1000:7.0f}ms {b / a:7.1f}x")
    print(f"  {'worker loop lag, max since start':38s} {new['lag_ms']:7.0f}ms {old['lag_ms']:7.0f}ms"
          f" {old['lag_ms'] / max(new['lag_ms'], 1):7.1f}x")
    print(f"  {'worker RSS after the load':38s} {new['rss'] / 2**20:7.0f}MB {old['rss'] / 2**20:7.0f}MB")
    new_long, old_long, new_real, old_real = classify_alone()
    print("classification alone, in-process, uncached (1,000 strings):")
    print(f"  {'distinct ~1 KB user agents':38s} {new_long * 1000:7.0f}ms {old_long * 1000:7.0f}ms"
          f" {old_long / new_long:7.1f}x")
    print(f"  {'distinct real user agents':38s} {new_real * 1000:7.0f}ms {old_real * 1000:7.0f}ms"
          f" {old_real / new_real:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
