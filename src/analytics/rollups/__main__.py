"""`python -m analytics.rollups rebuild [--start ISO] [--end ISO]`

Rebuilds the rollups from the raw events (all of them, or the UTC days covering the range) in
the database and schema the service is configured for (DATABASE_URL, DB_SCHEMA).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone

import psycopg

from ..config import get_settings
from ..schema import bootstrap_with_retry
from .rebuild import rebuild


def _instant(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m analytics.rollups")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rb = sub.add_parser("rebuild", help="recompute rollups from raw events")
    rb.add_argument("--start", type=_instant, help="ISO 8601 instant (widened to the UTC day)")
    rb.add_argument("--end", type=_instant, help="ISO 8601 instant, exclusive (widened to the UTC day)")
    args = ap.parse_args(argv)
    if (args.start is None) != (args.end is None):
        ap.error("give both --start and --end, or neither (everything)")
    settings = get_settings()
    asyncio.run(bootstrap_with_retry(settings))  # the schema at head first
    with psycopg.connect(str(settings.database_url)) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{settings.db_schema}, public",))
        try:
            report = rebuild(conn, args.start, args.end)
        except ValueError as exc:  # e.g. a range before the retention horizon
            print(f"refused: {exc}", file=sys.stderr)
            return 2
    span = "everything" if report.start is None else f"{report.start.isoformat()} .. {report.end.isoformat()}"
    print(f"rebuilt rollups ({span}) in {report.seconds:.1f}s; events table: {report.events} rows")
    for table, n in report.rows.items():
        ratio = f"{report.events / n:8.1f}x smaller" if n else ""
        print(f"  {table:32s} {n:>10d} rows {ratio}")
    if report.not_ready:
        print(f"not ready (created after events existed; readers ignore them until a full rebuild, "
              f"without --start/--end): {', '.join(report.not_ready)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
