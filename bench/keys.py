"""`python -m bench keys`: what checking an API key costs (issue 10), measured in one run.

One server with the production command (2 workers), PUBLIC_READS=true so that the same routes
answer with and without a key, stats cache off so every read runs its query. The same wrk loads
in alternating rounds, with and without a key: single-event POSTs (64 connections; an `ingest`
key, or none, as a browser sends) and a dashboard read (GET /api/v1/stats/totals, 16
connections; a `read` key, or none). Each figure is the best of its rounds; keyed/open is what
the check costs (a header lookup, a SHA-256, a dict lookup and the principal in the scope).

First, in this process, the guards alone (no server, no noise from other processes): the CPU
time of one check, with a key and without, next to building the request object they read.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
import tempfile
from pathlib import Path

from .ingest import _LUA_SINGLE, _loadavg, ensure_wrk, run_wrk, wait_all_workers_ready, write_lua
from support import Server, database_url, drop_schema, new_schema_name  # noqa: E402 (bench.ingest: tests/ on the path)


def _guards_alone(n: int = 140_000) -> None:
    from types import SimpleNamespace

    from starlette.requests import Request

    from analytics.auth.guards import ingest_access, require_read
    from analytics.auth.keys import key_hash, new_key
    from analytics.auth.principal import Principal
    from analytics.auth.store import KeyStore
    from analytics.config import Settings

    settings = Settings()
    store = KeyStore(settings)
    key = new_key()
    store._keys = {key_hash(k): Principal("key", f"k{i}", frozenset({"read"}))
                   for i, k in enumerate([key] + [new_key() for _ in range(1000)])}  # 1,001 keys
    store.loaded = True
    app = SimpleNamespace(state=SimpleNamespace(settings=settings, keys=store, jwt=None))
    base = [(b"host", b"127.0.0.1"), (b"user-agent", b"Mozilla/5.0"), (b"content-type", b"application/json")]

    async def per_call(fn, extra: list) -> float:
        scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "app": app,
                 "headers": base + extra}
        best = float("inf")
        for _ in range(7):  # the best of 7 runs: other processes only ever add time
            t0 = time.perf_counter()
            for _ in range(n // 7):
                await fn(Request(dict(scope)))
            best = min(best, (time.perf_counter() - t0) / (n // 7) * 1e6)
        return best

    async def baseline(request) -> None:
        request.headers.get("content-type")

    async def run() -> None:
        auth = [(b"authorization", b"Bearer " + key.encode())]
        for label, fn, extra in (("request object + one header (baseline)", baseline, []),
                                 ("require_read, a valid key", require_read, auth),
                                 ("ingest_access, no key (a browser)", ingest_access, []),
                                 ("ingest_access, an ingest key", ingest_access, auth)):
            print(f"  {label:40s} {await per_call(fn, extra):6.2f} us per request", flush=True)

    print("[bench] keys: the guards alone, in this process", flush=True)
    asyncio.run(run())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench keys")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    _guards_alone()
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
