"""One retention run: publish the new horizons, wait until every worker has seen them, drop.

Order matters:
1. Under an advisory lock (one run per database at a time, whichever worker or replica or
   `make retention` holds it), and only when the last run is older than the interval.
2. The new raw horizon is the end of the newest chunk entirely older than now - RETENTION_DAYS
   (drop_chunks drops whole chunks, so raw events are complete from there on); the new rollup
   horizon is the UTC midnight at or before now - ROLLUP_RETENTION_DAYS (a whole bucket of
   every rollup grain). Both only move forward.
3. They are published (committed), then the run waits PUBLISH_WAIT: workers re-read them every
   few seconds, and a question planned just before that runs within the read timeouts. After
   it, no question reads what is about to go.
4. Raw chunks before the raw horizon are dropped (drop_chunks, with a lock timeout and retries:
   an AccessExclusive lock that waited would queue every reader of that chunk behind it).
5. Session state is trimmed of entries before the rollup horizon (sessions left with none are
   deleted), in batches, in the writer's lock order; the triggers move the first-seen rows
   accordingly. Exact for every range starting at or after the horizon: a session's first
   bucket there keeps counting as first seen whatever it was seen in before. This comes before
   6, or the triggers would write transitions back into buckets that 6 has emptied.
6. Rollup rows before the rollup horizon are deleted in batches (plain tables; each batch its
   own short transaction).
Each step is idempotent: a run killed half-way is finished by the next one.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from ..config import Settings
from ..db import quote_ident
from ..rollups.visits import prune as prune_visits
from ..rollups.catalog import SES_BASE
from ..rollups.ddl import all_tables
from ..rollups.sessions import SUBJECTS, Subject
from .state import HORIZONS_TTL_S, STATE_TABLE, Horizons

log = logging.getLogger("analytics.retention")

LOCK_KEY = 4_004_004_012  # any fixed number; not the migrations' (4_004_004_004)
BATCH_ROWS = 10_000
BATCH_SESSIONS = 500   # ~0.4 s of row locks on those sessions per batch (measured: ~1,200 sessions/s)


class Stopped(Exception):
    """The worker is shutting down; the next run finishes the job."""


@dataclass
class Report:
    horizons: Horizons
    chunks: list[str] = field(default_factory=list)
    rollup_rows: dict[str, int] = field(default_factory=dict)
    sessions_trimmed: int = 0
    sessions_deleted: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step

    def as_log(self) -> dict:
        return {"raw_horizon": _iso(self.horizons.raw), "rollup_horizon": _iso(self.horizons.rollup),
                "chunks_dropped": len(self.chunks), "chunks": self.chunks,
                "rollup_rows_deleted": sum(self.rollup_rows.values()),
                "sessions_trimmed": self.sessions_trimmed, "sessions_deleted": self.sessions_deleted,
                "seconds": round(self.seconds, 3), "phases": {k: round(v, 3) for k, v in self.phases.items()}}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def publish_wait(settings: Settings) -> float:
    """How long a published horizon takes to reach every plan that could still run: the
    readiness TTL, then a plan may wait for a raw-read slot and for a connection."""
    return HORIZONS_TTL_S + settings.read_raw_wait_s + settings.db_timeout + 1.0


def connect(settings: Settings) -> psycopg.Connection:
    conn = psycopg.connect(str(settings.database_url), autocommit=True,
                           connect_timeout=max(1, int(settings.db_timeout)),
                           application_name="analytics-retention")
    conn.execute("SELECT set_config('search_path', %s, false)", (f"{quote_ident(settings.db_schema)}, public",))
    return conn


def run(settings: Settings, *, force: bool = False, stop: threading.Event | None = None,
        wait_s: float | None = None) -> Report | None:
    """Run retention now if this process gets the lock and (unless `force`) a run is due.
    None when another run holds the lock or the last one is recent."""
    stop = stop or threading.Event()
    with connect(settings) as conn:
        (locked,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not locked:
            return None
        try:
            if not force and not _due(conn, settings.retention_interval_s):
                return None
            return _run(conn, settings, stop, publish_wait(settings) if wait_s is None else wait_s)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _due(conn: psycopg.Connection, interval_s: float) -> bool:
    (due,) = conn.execute(sql.SQL(
        "SELECT last_run_at IS NULL OR last_run_at <= now() - make_interval(secs => %s) FROM {}").format(
        sql.Identifier(STATE_TABLE)), (interval_s,)).fetchone()
    return bool(due)


def read_horizons(conn: psycopg.Connection) -> Horizons:
    row = conn.execute(sql.SQL("SELECT raw_horizon, rollup_horizon FROM {}").format(
        sql.Identifier(STATE_TABLE))).fetchone()
    return Horizons(*row) if row else Horizons()


def _run(conn: psycopg.Connection, settings: Settings, stop: threading.Event, wait_s: float) -> Report:
    t0 = time.perf_counter()
    before = read_horizons(conn)
    after = _publish(conn, settings)
    report = Report(after)
    if after != before:
        log.info("retention horizons published; waiting for every worker to see them",
                 extra={"raw_horizon": _iso(after.raw), "rollup_horizon": _iso(after.rollup),
                        "wait_s": wait_s})
        if stop.wait(wait_s):
            raise Stopped()
    t = time.perf_counter()
    if after.raw is not None:
        report.chunks = _drop_chunks(conn, settings.db_schema, after.raw)
        report.phases["drop_chunks"], t = time.perf_counter() - t, time.perf_counter()
    if after.rollup is not None:
        report.sessions_trimmed, report.sessions_deleted = _trim_sessions(conn, after.rollup, stop)
        report.phases["sessions"], t = time.perf_counter() - t, time.perf_counter()
        report.rollup_rows = _delete_rollups(conn, after.rollup, stop)
        with conn.transaction():  # visits entirely before the horizon (rollups/visits.py)
            report.rollup_rows["visits"] = prune_visits(conn, after.rollup)
        report.phases["rollups"] = time.perf_counter() - t
    conn.execute(sql.SQL("UPDATE {} SET last_run_at = now()").format(sql.Identifier(STATE_TABLE)))
    report.seconds = time.perf_counter() - t0
    log.info("retention run", extra=report.as_log())
    return report


def _publish(conn: psycopg.Connection, settings: Settings) -> Horizons:
    raw = rollup = None
    if settings.retention_days > 0:
        (raw,) = conn.execute("""SELECT max(range_end) FROM timescaledb_information.chunks
            WHERE hypertable_schema = %s AND hypertable_name = 'events'
              AND range_end <= now() - make_interval(secs => %s)""",
                              (settings.db_schema, settings.retention_days * 86400)).fetchone()
    if settings.rollup_retention_days > 0:
        (rollup,) = conn.execute("SELECT date_trunc('day', now() - make_interval(secs => %s), 'UTC')",
                                 (settings.rollup_retention_days * 86400,)).fetchone()
    # GREATEST ignores NULLs: a horizon never moves back (data before it is gone for good).
    row = conn.execute(sql.SQL("""UPDATE {} SET raw_horizon = GREATEST(raw_horizon, %s),
            rollup_horizon = GREATEST(rollup_horizon, %s)
        RETURNING raw_horizon, rollup_horizon""").format(sql.Identifier(STATE_TABLE)),
                       (raw, rollup)).fetchone()
    return Horizons(*row)


def _drop_chunks(conn: psycopg.Connection, schema: str, horizon: datetime, attempts: int = 5) -> list[str]:
    """Every chunk entirely before `horizon` (also one made since by a back-dated event)."""
    events = f"{quote_ident(schema)}.events"
    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                # Writers queue behind a lock that waits: let it wait far less than WRITE_TIMEOUT_SECONDS.
                conn.execute("SET LOCAL lock_timeout = '2s'")
                return [r[0] for r in conn.execute(
                    "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)", (events, horizon))]
        except psycopg.errors.LockNotAvailable:
            log.warning("retention: chunks busy, retrying", extra={"attempt": attempt})
            time.sleep(min(30, 2 ** attempt))
    raise RuntimeError(f"could not lock the chunks to drop in {attempts} attempts; the next run retries")


def _entry_bucket(alias: str = "e") -> str:
    return f"split_part({alias}, '|', 1)::bigint"


def _trim_sessions(conn: psycopg.Connection, horizon: datetime, stop: threading.Event) -> tuple[int, int]:
    """Drop entries before `horizon` from the state of every distinct-count subject (sessions,
    visitors): (trimmed, deleted) summed over them."""
    trimmed = deleted = 0
    for subj in SUBJECTS:
        t, d = _trim_subject(conn, subj, horizon, stop)
        trimmed, deleted = trimmed + t, deleted + d
    return trimmed, deleted


def _trim_subject(conn: psycopg.Connection, subj: Subject, horizon: datetime,
                  stop: threading.Event) -> tuple[int, int]:
    """One subject's state, a key range at a time."""
    q = int(horizon.timestamp()) // SES_BASE  # entries hold 15-minute bucket numbers
    state, k = sql.Identifier(subj.state_table), sql.Identifier(subj.key)
    cast = sql.SQL(subj.key_type)
    trimmed = deleted = 0
    after = None
    while True:
        if stop.is_set():
            raise Stopped()
        (upto,) = conn.execute(sql.SQL("""SELECT max({k}) FROM (
            SELECT {k} FROM {s} WHERE %(after)s::{t} IS NULL OR {k} > %(after)s
            ORDER BY {k} LIMIT %(n)s) b""").format(s=state, k=k, t=cast),
                               {"after": after, "n": BATCH_SESSIONS}).fetchone()
        if upto is None:
            return trimmed, deleted
        params = {"lo": after, "hi": upto, "q": q}
        in_batch = sql.SQL("(%(lo)s::{t} IS NULL OR {k} > %(lo)s) AND {k} <= %(hi)s").format(k=k, t=cast)
        old = sql.SQL("EXISTS (SELECT 1 FROM unnest(s.entries) e WHERE {} < %(q)s)").format(sql.SQL(_entry_bucket()))
        kept = sql.SQL("EXISTS (SELECT 1 FROM unnest(s.entries) e WHERE {} >= %(q)s)").format(sql.SQL(_entry_bucket()))
        with conn.transaction():
            # Locked in the writer's order (the key, text keys COLLATE "C"): no deadlock with ingest.
            conn.execute(sql.SQL("""SELECT 1 FROM {s} s WHERE {b} AND {old}
                ORDER BY {k}{collate} FOR UPDATE""").format(s=state, b=in_batch, old=old, k=k,
                                                           collate=sql.SQL(subj.collate)), params)
            deleted += conn.execute(sql.SQL("DELETE FROM {s} s WHERE {b} AND {old} AND NOT {kept}").format(
                s=state, b=in_batch, old=old, kept=kept), params).rowcount
            trimmed += conn.execute(sql.SQL("""UPDATE {s} s
                SET entries = ARRAY(SELECT e FROM unnest(s.entries) e WHERE {bucket} >= %(q)s)
                WHERE {b} AND {old}""").format(s=state, b=in_batch, old=old, bucket=sql.SQL(_entry_bucket())),
                params).rowcount
        after = upto


def _delete_rollups(conn: psycopg.Connection, horizon: datetime, stop: threading.Event) -> dict[str, int]:
    """Rows of every rollup table before `horizon` (the bucket leads each primary key)."""
    out: dict[str, int] = {}
    for table in all_tables():
        t = sql.Identifier(table)
        total = 0
        while True:
            if stop.is_set():
                raise Stopped()
            n = conn.execute(sql.SQL("""DELETE FROM {t} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {t} WHERE bucket < %s LIMIT %s))""").format(t=t),
                             (horizon, BATCH_ROWS)).rowcount
            total += n
            if n == 0:
                break
        out[table] = total
    return out
