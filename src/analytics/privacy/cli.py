"""`python -m analytics privacy scrub|rotate`: the operator's privacy commands.

scrub   removes the IP addresses already stored (rows written before STORE_IP existed, or while it
        was true): sets `ip_address` to NULL, one time window at a time (newest first) and at
        most --batch rows per transaction, so each transaction is short, locks only the rows it
        changes and ingestion goes on meanwhile (new rows do not conflict with it). Prints its
        progress; idempotent: a second run finds nothing to do. It never touches rows without
        an IP, so with STORE_IP=false it can run while new events arrive, and be interrupted and
        started again at any time.
rotate  replaces today's visitor salt (privacy/salts.py) with a new random one: every visitor of
        today counts anew from then on. Workers pick it up within VISITOR_SALT_REFRESH_SECONDS.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg

from ..config import get_settings
from ..db import quote_ident
from .salts import SALT_BYTES, TABLE, day_date, utc_day

_BOUNDS = "SELECT min(time), max(time) FROM events WHERE ip_address IS NOT NULL"
# Up to `n` rows of the window that still hold an IP, oldest first from `lo` (the index on time
# leads there: each batch reads only rows after the previous one's, not the whole window
# again); the UPDATE repeats the window so that only its chunks are touched. (id, time) is the
# unique key. Answers how many rows changed and the latest time among them (the next `lo`).
_SCRUB = """WITH s AS (SELECT id, time FROM events
                   WHERE time >= %(lo)s AND time < %(hi)s AND ip_address IS NOT NULL
                   ORDER BY time LIMIT %(n)s),
         u AS (UPDATE events e SET ip_address = NULL FROM s
               WHERE e.id = s.id AND e.time = s.time AND e.time >= %(lo)s AND e.time < %(hi)s
               RETURNING e.time)
    SELECT count(*), max(time) FROM u"""


def _connect(settings) -> psycopg.Connection:
    conn = psycopg.connect(str(settings.database_url), autocommit=True)
    conn.execute("SELECT set_config('search_path', %s, false)", (f"{quote_ident(settings.db_schema)}, public",))
    return conn


def scrub(conn: psycopg.Connection, *, window: timedelta, batch: int, pause: float = 0.0,
          out=sys.stdout) -> int:
    """NULL every stored IP; returns how many rows were changed."""
    lo_all, hi_all = conn.execute(_BOUNDS).fetchone()
    if lo_all is None:
        print("no stored IP addresses: nothing to do", file=out)
        return 0
    total = 0
    hi = hi_all + timedelta(microseconds=1)
    # Newest first: the rows most recently written are the ones most worth removing soonest.
    while hi > lo_all:
        lo = hi - window
        done, cursor = 0, lo
        while True:
            with conn.transaction():
                n, last = conn.execute(_SCRUB, {"lo": cursor, "hi": hi, "n": batch}).fetchone()
            done += n
            if n < batch:
                break
            cursor = last  # rows at exactly `last` that still hold an IP are picked up next
            if pause:
                time.sleep(pause)
        total += done
        if done:
            print(f"{max(lo, lo_all).isoformat()} .. {hi.isoformat()}: {done} IP addresses removed "
                  f"(total {total})", file=out, flush=True)
        hi = lo
    # Rows written while it ran with STORE_IP=true are not its business; say if any are left.
    (left,) = conn.execute("SELECT count(*) FROM events WHERE ip_address IS NOT NULL").fetchone()
    print(f"done: {total} IP addresses removed; {left} rows still hold one", file=out)
    return total


def rotate(conn: psycopg.Connection, out=sys.stdout) -> None:
    today = day_date(utc_day())
    conn.execute(f"INSERT INTO {TABLE} (day, salt) VALUES (%s, %s) "
                 "ON CONFLICT (day) DO UPDATE SET salt = excluded.salt",
                 (today, secrets.token_bytes(SALT_BYTES)))
    print(f"the visitor salt of {today} is replaced; workers use it within "
          f"VISITOR_SALT_REFRESH_SECONDS", file=out)


def _interval(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration like 6h or 1d: {text!r}") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics privacy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scrub", help="remove the IP addresses already stored, in batches")
    p.add_argument("--window", type=_interval, default=timedelta(days=1),
                   help="time range handled at a time (default 1d)")
    p.add_argument("--batch", type=int, default=5000, help="most rows per transaction (default 5000)")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to sleep between batches")
    sub.add_parser("rotate", help="replace today's visitor salt")
    args = parser.parse_args(argv)
    settings = get_settings()
    with _connect(settings) as conn:
        if args.command == "scrub":
            started = datetime.now(timezone.utc)
            scrub(conn, window=args.window, batch=max(1, args.batch), pause=args.pause)
            print(f"took {(datetime.now(timezone.utc) - started).total_seconds():.1f} s")
        else:
            rotate(conn)
    return 0
