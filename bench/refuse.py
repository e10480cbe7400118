"""What hostile bodies cost the service: `python -m bench.refuse`. About a minute.

In its own schema (dropped at the end), with the service started by its production command
(gunicorn + uvicorn workers, default settings), it times, from a separate process on loopback,
how long each refusal takes to be answered (best and median of --repeat tries, the full request
including upload):

  - a 10 MB batch `[{},{},...]` with Content-Length, and the same sent chunked (no length);
  - a 3.9 MB one (under MAX_BODY_BYTES, 1.3 million items): refused by counting items;
  - the 10 MB one again with MAX_BODY_BYTES raised to 16 MB (a second server), so that only
    the item count refuses it;
  - a 1 MB single event (MAX_EVENT_BYTES), and 5,000 `[` to both endpoints.

Then the event loop's lag while batches that cost a lot of CPU are written: one worker takes
batches of 1,000 events with 1,000 distinct 1 KB user agents (every parse a cache miss) from 2
connections, while another connection asks GET /healthz every 20 ms on the same worker; the
answer time of /healthz is the lag (the loop cannot answer while something holds it).

Figures move with whatever else runs on the machine; no target is asserted here.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import httpx  # noqa: E402

from support import Server, database_url, drop_schema, new_schema_name  # noqa: E402

JSON = {"content-type": "application/json"}


def _status(client: httpx.Client, path: str, **kw) -> int | str:
    try:
        return client.post(path, **kw).status_code
    except httpx.HTTPError as exc:  # the old code reset the connection on some of these
        return type(exc).__name__


def _timed(client: httpx.Client, path: str, repeat: int, make_kw) -> tuple[int | str, float, float]:
    """(status, best ms, median ms) of `repeat` requests."""
    times, status = [], 0
    for _ in range(repeat):
        kw = make_kw()
        t0 = time.perf_counter()
        status = _status(client, path, headers=JSON, **kw)
        times.append((time.perf_counter() - t0) * 1000)
    return status, min(times), statistics.median(times)


def _chunks(body: bytes, size: int = 256 * 1024):
    for i in range(0, len(body), size):
        yield body[i:i + size]


def refusals(srv: Server, big: Server, repeat: int) -> list[tuple[str, int, float, float]]:
    ten_mb = b"[" + b",".join([b"{}"] * 3_495_253) + b"]"  # 10 MiB
    under = b"[" + b",".join([b"{}"] * 1_300_000) + b"]"
    single_1mb = b'{"page": "/' + b"x" * 1_000_000 + b'"}'
    deep = b"[" * 5000
    rows = []
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c, httpx.Client(base_url=big.url, headers=big.headers, timeout=60) as cb:
        cases = [
            ("10 MB batch [{},...] (Content-Length)", c, "/api/events/batch", lambda: {"content": ten_mb}),
            ("10 MB batch [{},...] (chunked)", c, "/api/events/batch",
             lambda: {"content": _chunks(ten_mb)}),
            ("3.9 MB batch, 1.3M items (under MAX_BODY_BYTES)", c, "/api/events/batch",
             lambda: {"content": under}),
            ("10 MB batch, MAX_BODY_BYTES=16MB (item count)", cb, "/api/events/batch",
             lambda: {"content": ten_mb}),
            ("1 MB single event", c, "/api/events/", lambda: {"content": single_1mb}),
            ("5,000 '[' single", c, "/api/events/", lambda: {"content": deep}),
            ("5,000 '[' batch", c, "/api/events/batch", lambda: {"content": deep}),
        ]
        for name, client, path, make_kw in cases:
            rows.append((name, *_timed(client, path, repeat, make_kw)))
    return rows


def _distinct_ua_batch(rng: random.Random, n: int = 1000) -> list[dict]:
    out = []
    for i in range(n):
        tail = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(900))
        ua = (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              f"Chrome/124.0.{i}.{rng.randint(0, 9999)} Safari/537.36 {tail}")[:1024]
        out.append({"page": f"/lag/{i % 20}", "user_agent": ua, "session_id": uuid.uuid4().hex})
    return out


def loop_lag(srv: Server, seconds: float) -> dict:
    stop = threading.Event()
    batch_ms: list[float] = []
    statuses: list[int] = []

    def load(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c:
            while not stop.is_set():
                body = _distinct_ua_batch(rng)
                t0 = time.perf_counter()
                statuses.append(_status(c, "/api/events/batch", json=body))
                batch_ms.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=load, args=(s,), daemon=True) for s in (1, 2)]
    lags: list[float] = []
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c:
        c.get("/healthz")
        for t in threads:
            t.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            c.get("/healthz")
            lags.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(60)
    lags.sort()
    return {"probes": len(lags), "lag_p50": statistics.median(lags), "lag_p99": lags[int(len(lags) * 0.99) - 1],
            "lag_max": lags[-1], "batches": len(batch_ms), "statuses": sorted(set(map(str, statuses))),
            "batch_p50": statistics.median(batch_ms) if batch_ms else 0.0}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.refuse")
    ap.add_argument("--repeat", type=int, default=5, help="tries of each refusal")
    ap.add_argument("--lag-seconds", type=float, default=20.0, help="duration of the loop-lag load")
    args = ap.parse_args(argv)
    url = database_url()
    schema = new_schema_name("bench_refuse")
    work = Path(os.environ.get("TMPDIR", "/tmp"))
    servers: list[Server] = []
    print(f"[bench] refuse: schema {schema}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    try:
        srv = Server(url, schema, workers=2, log_path=work / f"refuse-{schema}.log")
        servers.append(srv.start())
        big = Server(url, schema, workers=1, env={"MAX_BODY_BYTES": str(16 * 1024 * 1024)},
                     log_path=work / f"refuse-{schema}-big.log")
        servers.append(big.start())
        print(f"{'refusal':52} {'status':>6} {'best ms':>9} {'median ms':>10}")
        for name, status, best, median in refusals(srv, big, args.repeat):
            print(f"{name:52} {status!s:>6} {best:>9.1f} {median:>10.1f}", flush=True)
        for s in servers:
            s.stop()
        servers.clear()
        one = Server(url, schema, workers=1, log_path=work / f"refuse-{schema}-lag.log")
        servers.append(one.start())
        lag = loop_lag(one, args.lag_seconds)
        print(f"loop lag, 1 worker, batches of 1,000 distinct 1 KB user agents from 2 connections: "
              f"/healthz p50 {lag['lag_p50']:.1f} ms, p99 {lag['lag_p99']:.1f} ms, "
              f"max {lag['lag_max']:.1f} ms over {lag['probes']} probes; "
              f"{lag['batches']} batches, p50 {lag['batch_p50']:.0f} ms, statuses {lag['statuses']}")
    finally:
        for s in servers:
            s.stop()
        drop_schema(url, schema)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
