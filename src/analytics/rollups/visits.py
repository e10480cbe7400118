"""Visits, maintained at ingest: one row of `visits` per visit, exact once an event is acknowledged.

A visit is a visitor's run of human events (`visitor_id`, the daily pseudonym of
privacy/visitor.py) with no gap longer than VISIT_TIMEOUT_MINUTES: a gap of exactly the timeout
keeps the visit going. Events without a visitor_id (imported rows that carry none) and bot
events are in no visit. A row keeps what the metrics and dimensions need and what merging two
visits needs: its span, its first event (id, for ties: os/browser/device/referrer come from
it), pageviews (events named 'pageview'), all events, interactions (events that are neither
a pageview nor an 'engagement' beacon), and the first and last pageview (time, id, page: the
entry and exit pages; '' when the visit has no pageview). Ties in time are broken by event id.

Ingest (`ingest_statement`): every event of the batch becomes a one-event visit; the function
`visits_fold` takes them, locks their visitors (advisory locks in key order: two writers of one
visitor serialise, writers of different visitors never wait on each other), deletes the stored
visits of those visitors within the timeout of the batch's span, and returns the union cut into
islands again; the hook's INSERT stores them. Merging summaries is associative, so arrival
order does not matter: the stored visits always equal a recomputation from the raw events
(`rebuild`, the same island SQL fed with events; tests/test_visits.py checks both against a
Python model).
"""
from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from ..config import get_settings

TABLE = "visits"
LOCK_CLASS = 1170  # the advisory lock space of visitors (pg_advisory_xact_lock(int, int))

COLUMNS_DDL = """
            visitor_id    bigint      NOT NULL,
            started       timestamptz NOT NULL,
            ended         timestamptz NOT NULL,
            first_id      uuid        NOT NULL,
            pageviews     integer     NOT NULL,
            events        integer     NOT NULL,
            interactions  integer     NOT NULL,
            entry_at      timestamptz,
            entry_id      uuid,
            entry_page    text        NOT NULL,
            exit_at       timestamptz,
            exit_id       uuid,
            exit_page     text        NOT NULL,
            os            text        NOT NULL,
            browser       text        NOT NULL,
            device        text        NOT NULL,
            referrer_host text        NOT NULL"""

# One events row as a one-event visit: (expression, column), in the table's column order.
_PV = "name = 'pageview'"
_EVENT_AS_VISIT_COLS = (
    ("visitor_id", "visitor_id"), ("time", "started"), ("time", "ended"), ("id", "first_id"),
    (f"({_PV})::int", "pageviews"), ("1", "events"), ("(name NOT IN ('pageview', 'engagement'))::int", "interactions"),
    (f"CASE WHEN {_PV} THEN time END", "entry_at"), (f"CASE WHEN {_PV} THEN id END", "entry_id"),
    (f"CASE WHEN {_PV} THEN page ELSE '' END", "entry_page"),
    (f"CASE WHEN {_PV} THEN time END", "exit_at"), (f"CASE WHEN {_PV} THEN id END", "exit_id"),
    (f"CASE WHEN {_PV} THEN page ELSE '' END", "exit_page"),
    ("os", "os"), ("browser", "browser"), ("device", "device"), ("referrer_host", "referrer_host"),
)
_EVENT_AS_VISIT = ", ".join(e for e, _ in _EVENT_AS_VISIT_COLS)
_EVENT_AS_VISIT_NAMED = ", ".join(f"{e} AS {n}" for e, n in _EVENT_AS_VISIT_COLS)


def islands(items: str, timeout: str, rowtype: str = "visits") -> str:
    """Visits-shaped rows of `items` (a relation name, its columns those of `rowtype`) merged
    into visits: per visitor, sorted by start, a new visit begins where the start is more than
    `timeout` after every earlier end.

    What comes from one row of a visit (its first event: first_id, os, browser, device, referrer
    host; its entry; its exit) is picked as a whole row by one ordered aggregate each: three
    sorts per visit. (One per column, as before revision 0013, was nine: two thirds of the
    fold's aggregation time for a 1,000-event batch.)"""
    first = "ORDER BY started, first_id))[1]"
    entry = "ORDER BY entry_at, entry_id) FILTER (WHERE entry_at IS NOT NULL))[1]"
    exit_ = "ORDER BY exit_at DESC, exit_id DESC) FILTER (WHERE exit_at IS NOT NULL))[1]"
    return f"""SELECT visitor_id, lo, hi, (f).first_id, pv, ev, it,
            ea, (en).entry_id, coalesce((en).entry_page, ''), xa, (ex).exit_id, coalesce((ex).exit_page, ''),
            (f).os, (f).browser, (f).device, (f).referrer_host
        FROM (SELECT visitor_id, min(started) AS lo, max(ended) AS hi, (array_agg(r {first} AS f,
                     sum(pageviews)::int AS pv, sum(events)::int AS ev, sum(interactions)::int AS it,
                     min(entry_at) AS ea, (array_agg(r {entry} AS en,
                     max(exit_at) AS xa, (array_agg(r {exit_} AS ex
              FROM (SELECT o.*, sum(brk) OVER (PARTITION BY visitor_id ORDER BY started, ended, first_id
                                               ROWS UNBOUNDED PRECEDING) AS isl
                    FROM (SELECT i.*, ROW(i.*)::{rowtype} AS r,
                                 CASE WHEN started - max(ended) OVER w > {timeout} THEN 1 ELSE 0 END AS brk
                          FROM {items} i
                          WINDOW w AS (PARTITION BY visitor_id ORDER BY started, ended, first_id
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) o) n
              GROUP BY visitor_id, isl) g"""


def visits_ddl(schema: str) -> list[sql.Composable]:
    """What revisions 0009 and 0013 create (written out there in full)."""
    s = sql.Identifier(schema)
    fold = f"""CREATE OR REPLACE FUNCTION {{s}}.visits_fold(batch {{s}}.visits[], timeout interval)
        RETURNS SETOF {{s}}.visits LANGUAGE plpgsql AS $fn$
        BEGIN
            IF batch IS NULL THEN
                RETURN;
            END IF;
            -- One visitor's writers serialise here; key order: no deadlock between writers.
            PERFORM pg_advisory_xact_lock({LOCK_CLASS}, k)
            FROM (SELECT DISTINCT hashint8(visitor_id) AS k FROM unnest(batch) ORDER BY 1) keys;
            RETURN QUERY
            WITH b AS (SELECT * FROM unnest(batch)),
                 span AS (SELECT visitor_id, min(started) AS lo, max(ended) AS hi FROM b GROUP BY visitor_id),
                 gone AS (DELETE FROM {{s}}.visits v USING span
                          WHERE v.visitor_id = span.visitor_id
                            AND v.ended >= span.lo - timeout AND v.started <= span.hi + timeout
                          RETURNING v.*),
                 items AS (SELECT * FROM b UNION ALL SELECT * FROM gone)
            {islands("items", "timeout", "{s}.visits")};
        END $fn$"""
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {}.visits (" + COLUMNS_DDL + ")").format(s),
        sql.SQL("CREATE INDEX IF NOT EXISTS visits_visitor_idx ON {}.visits (visitor_id, started)").format(s),
        sql.SQL("CREATE INDEX IF NOT EXISTS visits_started_idx ON {}.visits (started)").format(s),
        sql.SQL(fold).format(s=s),
    ] + visit_rollups_ddl(schema)


# -- visit rollups (revision 0011) ---------------------------------------------------------------
# What the dashboard asks most (visits, views per visit, bounce rate, mean duration; in total, by
# entry page, by exit page) summed per bucket of the visits' start, so that those answers read a
# few thousand rows instead of every visit of the range. Statement triggers on `visits` keep them
# from its transition tables: every insert adds, every delete subtracts (the fold's delete and
# re-insert, a rebuild, retention alike). Durations are whole microseconds: integer sums stay
# exact whatever the order of the additions and subtractions. Rows whose visits went back to 0
# stay (readers skip them). The metrics they give say how in the catalog (`Metric.rollup`).
ROLLUPS: tuple[tuple[str, int, str | None], ...] = (
    ("rollup_visit_total_15m", 900, None), ("rollup_visit_entry_1h", 3600, "entry_page"),
    ("rollup_visit_exit_1h", 3600, "exit_page"))
def rollup_for(group_by: tuple[str, ...]) -> tuple[str, int] | None:
    """The visit rollup (table, bucket width in seconds) grouped exactly by `group_by`, if any."""
    for table, width, dim in ROLLUPS:
        if tuple(group_by) == ((dim,) if dim else ()):
            return table, width
    return None


def _rollup_change(table: str, width: int, dim: str | None, source: str, sign: str) -> str:
    """Add (sign '') or subtract (sign '-') the visits of `source`, per bucket of their start."""
    d = f", {dim}" if dim else ""
    by = "1, 2" if dim else "1"
    return f"""INSERT INTO {{s}}.{table} AS r (bucket{d}, visits, pageviews, bounces, dur_us)
        SELECT time_bucket('{width} seconds'::interval, started){d},
               {sign}count(*), {sign}sum(pageviews), {sign}count(*) FILTER (WHERE pageviews = 1 AND interactions = 0),
               {sign}sum((extract(epoch FROM ended - started) * 1000000)::bigint)
        FROM {source} GROUP BY {by} ORDER BY {by}
        ON CONFLICT (bucket{d}) DO UPDATE SET visits = r.visits + excluded.visits,
            pageviews = r.pageviews + excluded.pageviews, bounces = r.bounces + excluded.bounces,
            dur_us = r.dur_us + excluded.dur_us"""


def visit_rollups_ddl(schema: str) -> list[sql.Composable]:
    """What revision 0011 creates (written out there in full): the tables, and the triggers."""
    s = sql.Identifier(schema)
    out: list[sql.Composable] = []
    for table, _, dim in ROLLUPS:
        col = f"{dim} text NOT NULL, " if dim else ""
        key = f"bucket, {dim}" if dim else "bucket"
        out.append(sql.SQL(f"""CREATE TABLE IF NOT EXISTS {{s}}.{table} (
            bucket timestamptz NOT NULL, {col}visits bigint NOT NULL, pageviews bigint NOT NULL,
            bounces bigint NOT NULL, dur_us bigint NOT NULL, PRIMARY KEY ({key})) WITH (fillfactor = 90)""").format(s=s))
    # An update (nothing in the service updates visits; an operator's repair might) is both.
    for op, changes in (("insert", (("new_rows", ""),)), ("delete", (("old_rows", "-"),)),
                        ("update", (("old_rows", "-"), ("new_rows", "")))):
        body = ";\n            ".join(_rollup_change(t, w, d, rows, sign) for rows, sign in changes for t, w, d in ROLLUPS)
        out.append(sql.SQL(f"""CREATE OR REPLACE FUNCTION {{s}}.visits_rollup_{op}() RETURNS trigger
            LANGUAGE plpgsql AS $fn$
            BEGIN
            {body};
            RETURN NULL;
            END $fn$""").format(s=s))
        ref = {"insert": "NEW TABLE AS new_rows", "delete": "OLD TABLE AS old_rows",
               "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}[op]
        out.append(sql.SQL(f"""CREATE OR REPLACE TRIGGER visits_rollup_{op} AFTER {op.upper()} ON {{s}}.visits
            REFERENCING {ref} FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.visits_rollup_{op}()""").format(s=s))
    return out


def _timeout() -> str:
    minutes = get_settings().visit_timeout_minutes
    return f"'{float(minutes) * 60:.6f} seconds'::interval"


def ingest_statement() -> sql.Composable:
    """The hook's data-modifying statement over `ins` (the rows just stored)."""
    return sql.SQL(f"""INSERT INTO visits
        SELECT * FROM visits_fold(
            (SELECT array_agg(ROW({_EVENT_AS_VISIT})::visits) FROM ins
             WHERE NOT is_bot AND visitor_id IS NOT NULL),
            {_timeout()})""")


def ingest_hook() -> list:
    return [ingest_statement()]


def install() -> None:
    from ..ingestion.repository import register_insert_hook

    register_insert_hook(ingest_hook)


def rebuild_visits(conn: psycopg.Connection, start: datetime | None, end: datetime | None,
                   horizon: datetime | None = None) -> None:
    """Recompute visits from raw events: all of them, or those of every visitor with an event in
    [start, end) or a visit overlapping it (all of such a visitor's visits within the span they
    and the range cover)."""
    timeout = _timeout()
    human = "NOT is_bot AND visitor_id IS NOT NULL"
    if start is None:
        # No trigger sees a TRUNCATE: the visit rollups go too (those this schema has: a database
        # not yet at revision 0011 has none).
        present = [t for t, _, _ in ROLLUPS if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0]]
        conn.execute("TRUNCATE " + ", ".join(["visits", *present]))
        conn.execute(f"""INSERT INTO visits {islands(
            f"(SELECT {_EVENT_AS_VISIT_NAMED} FROM events WHERE {human})", timeout)}""")
        return
    conn.execute("""DROP TABLE IF EXISTS rebuild_visitors;
        CREATE TEMP TABLE rebuild_visitors (visitor_id bigint PRIMARY KEY) ON COMMIT DROP""")
    conn.execute(f"""INSERT INTO rebuild_visitors
        SELECT visitor_id FROM events WHERE time >= %(a)s AND time < %(b)s AND {human}
        UNION SELECT visitor_id FROM visits WHERE ended >= %(a)s - {timeout} AND started < %(b)s + {timeout}""",
                 {"a": start, "b": end})
    lo, hi = conn.execute("""SELECT min(started), max(ended) FROM visits
        WHERE visitor_id IN (SELECT visitor_id FROM rebuild_visitors)""").fetchone()
    lo = start if lo is None else min(lo, start)
    hi = end if hi is None else max(hi, end)
    if horizon is not None:
        lo = max(lo, horizon)
    conn.execute("DELETE FROM visits WHERE visitor_id IN (SELECT visitor_id FROM rebuild_visitors) "
                 "AND started >= %s", (lo,))
    conn.execute(f"""INSERT INTO visits {islands(
        f"(SELECT {_EVENT_AS_VISIT_NAMED} FROM events WHERE {human} AND time >= %(lo)s AND time <= %(hi)s "
        f"AND visitor_id IN (SELECT visitor_id FROM rebuild_visitors))", timeout)}""",
                 {"lo": lo, "hi": hi})


def prune(conn: psycopg.Connection, horizon: datetime) -> int:
    """Retention: visits that ended before the rollup horizon (nothing before it is answered)."""
    n = conn.execute("DELETE FROM visits WHERE ended < %s", (horizon,)).rowcount
    for table, _, _ in ROLLUPS:  # the visit rollups' rows before it (the triggers zeroed most)
        conn.execute(f"DELETE FROM {table} WHERE bucket < %s", (horizon,))
    return n
