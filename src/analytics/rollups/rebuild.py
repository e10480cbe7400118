"""Recompute rollups from the raw events: everything, or the UTC days covering [start, end).

Use after a bulk load straight into `events`, a repair, or a change of the rollup catalog. A
ranged rebuild takes events outside its range as already reflected in the rollups: give it the
whole range that was loaded or repaired.
Runs in one transaction holding a SHARE lock on events: readers go on, writers wait (the
service's writer queues and retries), so no event can slip between the scan and the commit.

Once retention dropped raw events (a raw horizon in `retention_state`), the rollups are all
that is left before it: a full rebuild, or a range starting before it, is refused (it would
empty them), and a ranged rebuild keeps the session entries it cannot read back.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from .catalog import SES_BASE, families
from .ddl import META_TABLE, all_tables
from .maintain import agg_upsert
from .visits import TABLE as VISITS_TABLE, rebuild_visits
from .sessions import SESSIONS, SUBJECTS, Subject, entries_from, upsert_state_sql

STATE_TABLES = [subj.state_table for subj in SUBJECTS]

log = logging.getLogger("analytics.rollups")


@dataclass
class RebuildReport:
    start: datetime | None
    end: datetime | None
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    events: int = 0
    not_ready: list[str] = field(default_factory=list)  # still ignored by readers (ranged rebuild)


def _day_floor(t: datetime) -> datetime:
    t = t.astimezone(timezone.utc)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _day_ceil(t: datetime) -> datetime:
    f = _day_floor(t)
    return f if f == t else f + timedelta(days=1)


def _range(col: str, start: datetime | None, end: datetime | None) -> sql.Composable:
    if start is None:
        return sql.SQL("TRUE")
    return sql.SQL("{c} >= {a} AND {c} < {b}").format(c=sql.Identifier(col), a=sql.Literal(start),
                                                      b=sql.Literal(end))


def _additive(conn: psycopg.Connection, start: datetime | None, end: datetime | None) -> None:
    for kind in ("agg", "dur"):
        for fam in families(kind):
            finer = None
            for g, table in fam.tables():
                if start is not None:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(
                        sql.Identifier(table), _range("bucket", start, end)))
                if finer is None:
                    stmt = agg_upsert(fam, g, "events", where=_range("time", start, end), additive=False)
                else:
                    stmt = agg_upsert(fam, g, finer, where=_range("bucket", start, end), additive=False)
                conn.execute(stmt)
                finer = table


def raw_horizon(conn: psycopg.Connection) -> datetime | None:
    """Raw events before this were dropped by retention (None: none were)."""
    row = conn.execute("""SELECT CASE WHEN to_regclass('retention_state') IS NOT NULL
        THEN (SELECT raw_horizon FROM retention_state) END""").fetchone()
    return row[0] if row else None


def _sessions(conn: psycopg.Connection, start: datetime | None, end: datetime | None,
              subj: Subject = SESSIONS, horizon: datetime | None = None) -> None:
    """The state of one subject (sessions or visitors) and, through its triggers, its first-seen
    tables."""
    k, state = subj.key, sql.Identifier(subj.state_table)
    if start is None:
        conn.execute(upsert_state_sql(entries_from("events", subj=subj), replace=True, subj=subj))
        return
    # Sessions with an event in the range now, or with state in the range from before.
    lo, hi = int(start.timestamp()) // SES_BASE, int(end.timestamp()) // SES_BASE
    conn.execute(f"DROP TABLE IF EXISTS rebuild_sessions, rebuild_entries; "
                 f"CREATE TEMP TABLE rebuild_sessions ({k} {subj.key_type} PRIMARY KEY) ON COMMIT DROP")
    conn.execute(sql.SQL("""INSERT INTO rebuild_sessions
        SELECT {k} FROM events WHERE {r} AND NOT is_bot AND {k} IS NOT NULL
        UNION
        SELECT {k} FROM {state}
        WHERE EXISTS (SELECT 1 FROM unnest(entries) e WHERE split_part(e, '|', 1)::bigint >= %s
                                                          AND split_part(e, '|', 1)::bigint < %s)""").format(
        r=_range("time", start, end), state=state, k=sql.SQL(k)), (lo, hi))
    conn.execute("ANALYZE rebuild_sessions")
    # Their events are read where they can be: in the range, and in every quarter hour their
    # stored entries name (outside the range, events are what the state already reflects; a
    # load outside the range needs its own rebuild). Events have no index on session_id, so
    # this window is what keeps a 1-day rebuild from reading every event.
    (q_lo, q_hi) = conn.execute(sql.SQL("""SELECT min(b), max(b) FROM {state} s
        JOIN rebuild_sessions r USING ({k}),
        LATERAL (SELECT split_part(e, '|', 1)::bigint AS b FROM unnest(s.entries) e) x""").format(
        state=state, k=sql.SQL(k))).fetchone()
    lo = start if q_lo is None else min(start, datetime.fromtimestamp(q_lo * SES_BASE, timezone.utc))
    hi = end if q_hi is None else max(end, datetime.fromtimestamp((q_hi + 1) * SES_BASE, timezone.utc))
    # Their entries from one scan, kept for both steps below (a second scan to find the sessions
    # left without events took 6 s of a 1-day rebuild at 10M events, writers waiting).
    scanned = entries_from("events", _range("time", max(lo, horizon) if horizon else lo, hi).as_string(conn)
                           + f" AND {k} IN (SELECT {k} FROM rebuild_sessions)", subj)
    if horizon is not None:
        # Entries before the raw horizon cannot be read back from events: keep the stored ones.
        scanned = sql.SQL("""SELECT {k}, array_agg(e) AS entries FROM (
                SELECT {k}, unnest(entries) AS e FROM ({scanned}) f
                UNION
                SELECT s.{k}, e FROM {state} s JOIN rebuild_sessions USING ({k}),
                       unnest(s.entries) AS e WHERE split_part(e, '|', 1)::bigint < {q}) x
            GROUP BY {k}""").format(scanned=scanned, state=state, k=sql.SQL(k),
                                    q=sql.Literal(int(horizon.timestamp()) // SES_BASE))
    conn.execute(sql.SQL("CREATE TEMP TABLE rebuild_entries ON COMMIT DROP AS {}").format(scanned))
    conn.execute(upsert_state_sql(sql.SQL(f"SELECT {k}, entries FROM rebuild_entries"), replace=True,
                                  subj=subj))
    # Sessions left without any human event lose their state (the delete trigger takes them out).
    conn.execute(sql.SQL("""DELETE FROM {state} s USING rebuild_sessions r
        WHERE s.{k} = r.{k}
          AND NOT EXISTS (SELECT 1 FROM rebuild_entries x WHERE x.{k} = r.{k})""").format(
        state=state, k=sql.SQL(k)))


def rebuild(conn: psycopg.Connection, start: datetime | None = None,
            end: datetime | None = None) -> RebuildReport:
    """Rebuild every rollup (start=end=None) or the UTC days covering [start, end)."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    if start is not None:
        start, end = _day_floor(start), _day_ceil(end)
        if end <= start:
            raise ValueError("end must be after start")
    report = RebuildReport(start, end)
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute("SET LOCAL jit = off")
        conn.execute("LOCK TABLE events IN SHARE MODE")
        horizon = raw_horizon(conn)
        if horizon is not None and (start is None or start < horizon):
            raise ValueError(
                f"raw events before {horizon.isoformat()} were dropped by retention and the rollups are all "
                "that is left of them: a rebuild there would empty them. Rebuild a range that starts at or "
                f"after {_day_ceil(horizon).isoformat()} (--start/--end)")
        if start is None:
            conn.execute(sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in [*STATE_TABLES, *all_tables()])))
        _additive(conn, start, end)
        for subj in SUBJECTS:
            _sessions(conn, start, end, subj, horizon)
        rebuild_visits(conn, start, end, horizon)
        if start is None:
            conn.execute(sql.SQL("""INSERT INTO {meta} (name, ready, rebuilt_at)
                SELECT t, true, now() FROM unnest(%s::text[]) AS t
                ON CONFLICT (name) DO UPDATE SET ready = true, rebuilt_at = now()""").format(
                meta=sql.Identifier(META_TABLE)), (all_tables(),))
        else:
            # A table that is not ready (created after events existed) holds nothing outside
            # the range: only a full rebuild can make it ready.
            conn.execute(sql.SQL("UPDATE {} SET rebuilt_at = now() WHERE ready AND name = ANY(%s)").format(
                sql.Identifier(META_TABLE)), (all_tables(),))
            report.not_ready = [r[0] for r in conn.execute(sql.SQL(
                "SELECT name FROM {} WHERE NOT ready AND name = ANY(%s) ORDER BY name").format(
                sql.Identifier(META_TABLE)), (all_tables(),))]
    conn.execute("ANALYZE " + ", ".join([*STATE_TABLES, *all_tables(), VISITS_TABLE]))
    conn.commit()
    report.seconds = time.perf_counter() - t0
    report.rows = table_rows(conn)
    (report.events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.commit()
    return report


def fill_missing(conn: psycopg.Connection) -> RebuildReport:
    """Fill only the summable rollup tables that are not ready (a revision added them to a
    database that already held events), from the raw events, and mark them ready; every other
    rollup is left as it is. Minutes where a full rebuild takes the better part of an hour at
    10M events. First-seen (ses/vis) tables need a full rebuild: they are reported, not filled.
    Same lock as `rebuild`: readers go on, writers wait."""
    report = RebuildReport(None, None)
    t0 = time.perf_counter()
    filled: list[str] = []
    with conn.transaction():
        conn.execute("SET LOCAL jit = off")
        conn.execute("LOCK TABLE events IN SHARE MODE")
        missing = {r[0] for r in conn.execute(sql.SQL(
            "SELECT name FROM {} WHERE NOT ready AND name = ANY(%s)").format(sql.Identifier(META_TABLE)),
            (all_tables(),))}
        if missing and raw_horizon(conn) is not None:
            raise ValueError("retention dropped raw events, so a rollup added since cannot be filled "
                             f"with what came before: {', '.join(sorted(missing))} stay not ready")
        for kind in ("agg", "dur"):
            for fam in families(kind):
                finer = None  # a complete finer table of the family, else the events
                for g, table in fam.tables():
                    if table in missing:
                        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
                        conn.execute(agg_upsert(fam, g, finer or "events", additive=False))
                        filled.append(table)
                    finer = table
        if filled:
            conn.execute(sql.SQL("UPDATE {} SET ready = true, rebuilt_at = now() WHERE name = ANY(%s)").format(
                sql.Identifier(META_TABLE)), (filled,))
        report.not_ready = sorted(missing - set(filled))
    if filled:
        conn.execute("ANALYZE " + ", ".join(filled))
    conn.commit()
    report.seconds = time.perf_counter() - t0
    report.rows = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
                   for t in filled}
    (report.events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.commit()
    return report


def table_rows(conn: psycopg.Connection) -> dict[str, int]:
    out = {}
    for t in [*STATE_TABLES, *all_tables(), VISITS_TABLE]:
        (out[t],) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
    return out

