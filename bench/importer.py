"""Import speed: `python -m bench import [--rows N] [--chunk-rows C]`.

Writes N events (default 200,000) over 60 days in our export format (NDJSON), then:
1. `python -m analytics import FILE` into a scratch schema, as an operator runs it: rows/s of
   the load (parse, validate, COPY, checkpoint) and the seconds of the rollup rebuild after it;
2. the alternative it replaces: the same rows, parsed the same way, stored through
   insert_events with the rollup hooks installed (rollups maintained row by row, as the live
   service does), into another scratch schema: rows/s.
The scratch schemas are dropped at the end. On a machine shared with other work, run it twice
and take the better figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import psycopg  # noqa: E402

UA = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
      "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
      "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"]
PAGES = ["/", "/pricing", "/blog", "/blog/a", "/docs/x", "/about", "/login", "/signup"]


def write_file(path: Path, n: int) -> None:
    """Short sessions (a visit: 1-8 events within half an hour), as real traffic has them."""
    rng = random.Random(1)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=400)
    with open(path, "w") as f:
        i = 0
        while i < n:
            t = start + timedelta(seconds=rng.randrange(60 * 86400))
            sid, ua = uuid.UUID(int=rng.getrandbits(128)).hex, rng.choice(UA)
            for _ in range(rng.randint(1, 8)):
                f.write(json.dumps({"id": str(uuid.UUID(int=rng.getrandbits(128))),
                                    "time": t.isoformat().replace("+00:00", "Z"), "page": rng.choice(PAGES),
                                    "user_agent": ua, "referrer": "", "session_id": sid,
                                    "duration": rng.randint(0, 300), "ip_address": "", "description": "",
                                    "os": "Windows", "browser": "Chrome", "device": "desktop",
                                    "is_bot": False}) + "\n")
                t += timedelta(seconds=rng.randint(5, 240))
                i += 1
                if i >= n:
                    break


def _cli(url: str, schema: str, path: Path, chunk: int) -> tuple[float, float, str]:
    env = {**os.environ, "DATABASE_URL": url, "DB_SCHEMA": schema, "PYTHONPATH": str(ROOT / "src"),
           "LOG_LEVEL": "WARNING"}
    run = subprocess.run([sys.executable, "-m", "analytics", "import", str(path), "--chunk-rows", str(chunk)],
                         env=env, capture_output=True, text=True, check=True)
    line = [x for x in run.stderr.splitlines() if "this run loaded" in x][-1]
    m = re.search(r"loaded ([\d,]+) rows in ([\d.]+)s .*rebuilt rollups in ([\d.]+)s", line)
    rows, load_s, rebuild_s = int(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3))
    return rows / load_s, rebuild_s, line


async def _with_hooks(url: str, schema: str, path: Path, chunk: int) -> float:
    from analytics import rollups
    from analytics.config import get_settings
    from analytics.importer.formats import Reader, detect
    from analytics.importer.mapping import Mapper
    from analytics.ingestion.enrich import UserAgentCache
    from analytics.ingestion.repository import insert_events, unregister_insert_hook
    from analytics.rollups.maintain import ingest_statements
    from analytics.schema import bootstrap_with_retry

    settings = get_settings()
    object.__setattr__(settings, "database_url", url)
    object.__setattr__(settings, "db_schema", schema)
    await bootstrap_with_retry(settings)
    rollups.install()
    try:
        mapper = Mapper("ndjson", UserAgentCache(), timedelta(seconds=60))
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
            await conn.execute("SET jit = off")
            t0, n, batch = time.perf_counter(), 0, []
            reader = Reader(detect(path))
            for row in reader:
                batch.append(mapper.to_record(row.fields, row.line))
                if len(batch) >= chunk:
                    async with conn.transaction():
                        await insert_events(conn, batch)
                    n, batch = n + len(batch), []
            if batch:
                async with conn.transaction():
                    await insert_events(conn, batch)
                n += len(batch)
            reader.close()
            return n / (time.perf_counter() - t0)
    finally:
        unregister_insert_hook(ingest_statements)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench import")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    args = ap.parse_args(argv)
    from analytics.config import _database_url

    url = _database_url()
    tag = uuid.uuid4().hex[:8]
    schemas = [f"bench_import_{tag}", f"bench_import_hooks_{tag}"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "events.ndjson"
        write_file(path, args.rows)
        mb = path.stat().st_size / 1e6
        try:
            rate, rebuild_s, line = _cli(url, schemas[0], path, args.chunk_rows)
            hooks_rate = asyncio.run(_with_hooks(url, schemas[1], path, args.chunk_rows))
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                for s in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
    total = args.rows / (args.rows / rate + rebuild_s)
    print(f"import of {args.rows:,} events ({mb:.0f} MB NDJSON), "
          f"chunks of {args.chunk_rows:,}:")
    print(f"  load without hooks  {rate:>10,.0f} rows/s, then rollup rebuild {rebuild_s:.1f}s "
          f"(= {total:,.0f} rows/s overall)")
    print(f"  load with the hooks {hooks_rate:>10,.0f} rows/s (rollups maintained row by row)")
    print(f"  ({line.strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
