"""What privacy by default costs at ingest: `python -m bench visitors`. About a minute.

- the per-request CPU: building the Sender (client address behind TRUSTED_PROXIES, site host,
  principal) and hashing one event's visitor_id, and the access log's client hash (timeit);
- the write path in-process (repository.insert_events with the service's hooks, COPY + rollups,
  1,000-row transactions, 4 connections, as (a') of `python -m bench ingest`), in its own empty
  schema, rows without a visitor_id (what the code before issue 10 stored: no visitor state, no
  `vis` rollups) and rows with one (every event's address from the ingest mix: ~1,000 visitors
  per batch), in alternation, --rounds times --seconds each. The difference is the `vis`
  state upsert and its first-seen triggers.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from bench.ingest import copy_rate, event_body, make_records, register_service_hooks  # noqa: E402
from support import database_url, drop_schema, new_schema_name  # noqa: E402


def cpu_costs() -> dict[str, float]:
    from analytics.privacy.visitor import access_hash, sender
    from analytics.web.client import parse_networks

    nets = parse_networks(["10.0.0.0/8"])
    salt = b"s" * 32
    headers = [(b"host", b"api.example"), (b"origin", b"https://shop.example"),
               (b"user-agent", event_body(0, "x")["user_agent"].encode()),
               (b"x-forwarded-for", b"198.51.100.7")]
    ua = event_body(0, "x")["user_agent"]

    def per_request():
        scope = {"client": ("10.1.2.3", 5555), "headers": headers}  # a fresh scope: nothing cached
        s = sender(scope, nets, salt, False)
        return s.visitor_id(s.ip, ua)

    n = 20000
    out = {"sender + visitor_id, per request": min(timeit.repeat(per_request, number=n, repeat=5)) / n}
    out["access-log client hash"] = min(timeit.repeat(lambda: access_hash(salt, "198.51.100.7"),
                                                       number=n, repeat=5)) / n
    return out


def with_visitors(records):
    from analytics.privacy.visitor import visitor_hash

    salt = b"s" * 32
    return [r._replace(visitor_id=visitor_hash(salt, event_body(i, "x")["ip_address"], r.user_agent, "site"))
            for i, r in enumerate(records)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench visitors")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8)
    args = ap.parse_args(argv)
    for name, secs in cpu_costs().items():
        print(f"{name:40s} {secs * 1e6:7.2f} µs")
    from analytics import migrations
    from analytics.config import Secret, Settings

    url = database_url() if not os.environ.get("DATABASE_URL") else os.environ["DATABASE_URL"]
    schema = new_schema_name("bench_visitors")
    migrations.upgrade(Settings(database_url=Secret(url), db_schema=schema))
    try:
        print(f"insert hooks: {register_service_hooks()}; schema {schema} (empty at the start)")
        plain = make_records(20_000)
        named = with_visitors(plain)
        assert plain[0].visitor_id is None and named[0].visitor_id is not None
        print(f"distinct visitors per 1,000-row batch: {len({r.visitor_id for r in named[:1000]})}")
        for rnd in range(args.rounds):
            for label, recs in (("without visitor_id", plain), ("with visitor_id", named)):
                rate = asyncio.run(copy_rate(url, schema, recs, via_service=True, connections=4,
                                             seconds=args.seconds))
                print(f"round {rnd + 1}: insert_events {label:20s} {rate:9,.0f} rows/s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        drop_schema(url, schema)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
