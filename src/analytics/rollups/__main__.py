"""`python -m analytics.rollups rebuild [--start ISO --end ISO | --missing]`

Rebuilds the rollups from the raw events (all of them, or the UTC days covering the range) in
the database and schema the service is configured for (DATABASE_URL, DB_SCHEMA). `--missing`
fills only the rollup tables an upgrade added to a database that already held events (they are
'not ready' until then, and readers answer from raw events instead).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone

import psycopg

from ..config import get_settings
from ..schema import bootstrap_with_retry
from .rebuild import fill_missing, rebuild


def _instant(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m analytics.rollups")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rb = sub.add_parser("rebuild", help="recompute rollups from raw events")
    rb.add_argument("--start", type=_instant, help="ISO 8601 instant (widened to the UTC day)")
    rb.add_argument("--end", type=_instant, help="ISO 8601 instant, exclusive (widened to the UTC day)")
    rb.add_argument("--missing", action="store_true",
                    help="fill only the rollup tables that are not ready (added by an upgrade)")
    args = ap.parse_args(argv)
    if (args.start is None) != (args.end is None):
        ap.error("give both --start and --end, or neither (everything)")
    if args.missing and args.start is not None:
        ap.error("--missing fills whole tables: no --start/--end with it")
    settings = get_settings()
    asyncio.run(bootstrap_with_retry(settings))  # the schema at head first
    with psycopg.connect(str(settings.database_url)) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{settings.db_schema}, public",))
        try:
            if args.missing:
                return _missing(fill_missing(conn))
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
        print(f"not ready (created after events existed; readers ignore them until `rebuild --missing` or a full rebuild, "
              f"without --start/--end): {', '.join(report.not_ready)}")
    return 0


def _missing(report) -> int:
    if not report.rows:
        print("no rollup table to fill: every summable rollup is ready")
    else:
        print(f"filled {len(report.rows)} rollup table(s) that were not ready in {report.seconds:.1f}s; "
              f"events table: {report.events} rows")
        for table, n in report.rows.items():
            print(f"  {table:32s} {n:>10d} rows")
    if report.not_ready:
        print(f"still not ready (first-seen tables: a full rebuild fills them): {', '.join(report.not_ready)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
