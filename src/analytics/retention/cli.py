"""`python -m analytics retention [status]` (`make retention`): run retention now, or show it.

Runs now whatever the time of the last run (in the database and schema the service is
configured for: DATABASE_URL, DB_SCHEMA, RETENTION_DAYS, ROLLUP_RETENTION_DAYS). Exit status:
0 done (or retention off), 1 another run holds the lock, 2 bad settings or arguments.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..config import get_settings
from .state import check_settings


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m analytics retention",
                                 description="Drop raw events and rollups older than the retention settings.")
    ap.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    args = ap.parse_args(argv)
    settings = get_settings()
    try:
        check_settings(settings)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..schema import bootstrap_with_retry
    from . import run

    asyncio.run(bootstrap_with_retry(settings))  # the schema at head first
    print(f"raw events kept: {_days(settings.retention_days)}; rollups kept: "
          f"{_days(settings.rollup_retention_days)}")
    if args.action == "status":
        with run.connect(settings) as conn:
            h = run.read_horizons(conn)
        print(f"raw horizon: {h.raw.isoformat() if h.raw else 'none'}; "
              f"rollup horizon: {h.rollup.isoformat() if h.rollup else 'none'}")
        return 0
    if not (settings.retention_days or settings.rollup_retention_days):
        print("retention is off (RETENTION_DAYS=0): nothing to do")
        return 0
    report = run.run(settings, force=True)
    if report is None:
        print("another retention run holds the lock; try again later", file=sys.stderr)
        return 1
    d = report.as_log()
    print(f"retention done in {d['seconds']}s: raw horizon {d['raw_horizon'] or 'none'}, rollup horizon "
          f"{d['rollup_horizon'] or 'none'}")
    print(f"  dropped {d['chunks_dropped']} raw chunk(s){': ' + ', '.join(report.chunks) if report.chunks else ''}")
    for table, n in report.rollup_rows.items():
        if n:
            print(f"  {table:32s} {n:>10d} rows deleted")
    print(f"  sessions: {report.sessions_trimmed} trimmed, {report.sessions_deleted} deleted")
    return 0


def _days(d: float) -> str:
    return f"{d:g} days" if d else "forever"
