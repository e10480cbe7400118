"""visit rollups: visits, pageviews, bounces and duration per bucket, in total and by entry/exit page

Issue 11: the dashboard's visit tiles, its chart and its entry/exit panels read these instead of
every visit of the range (rollups/visits.py explains them). Statement triggers on `visits` keep
them from its transition tables: each insert adds, each delete subtracts. Filled here from the
visits already stored, after the triggers exist (in one transaction: no visit written meanwhile
is missed), and marked ready.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# (table, bucket width in seconds, its dimension column or None). Written out: a revision must
# do the same thing forever.
TABLES = (("rollup_visit_total_15m", 900, None), ("rollup_visit_entry_1h", 3600, "entry_page"),
          ("rollup_visit_exit_1h", 3600, "exit_page"))


def _aggregate(table: str, width: int, dim: str | None, source: str, sign: str) -> str:
    """Add (sign '') or subtract (sign '-') the visits of `source`, per bucket of their start."""
    d = f", {dim}" if dim else ""
    by = "1, 2" if dim else "1"
    return f"""INSERT INTO "__schema__".{table} AS r (bucket{d}, visits, pageviews, bounces, dur_us)
        SELECT time_bucket('{width} seconds'::interval, started){d},
               {sign}count(*), {sign}sum(pageviews), {sign}count(*) FILTER (WHERE pageviews = 1 AND interactions = 0),
               {sign}sum((extract(epoch FROM ended - started) * 1000000)::bigint)
        FROM {source} GROUP BY {by} ORDER BY {by}
        ON CONFLICT (bucket{d}) DO UPDATE SET visits = r.visits + excluded.visits,
            pageviews = r.pageviews + excluded.pageviews, bounces = r.bounces + excluded.bounces,
            dur_us = r.dur_us + excluded.dur_us"""


def upgrade() -> None:
    for table, _, dim in TABLES:
        col = f"{dim} text NOT NULL, " if dim else ""
        key = f"bucket, {dim}" if dim else "bucket"
        helpers.execute(f"""CREATE TABLE IF NOT EXISTS "__schema__".{table} (
            bucket timestamptz NOT NULL, {col}visits bigint NOT NULL, pageviews bigint NOT NULL,
            bounces bigint NOT NULL, dur_us bigint NOT NULL, PRIMARY KEY ({key})) WITH (fillfactor = 90)""")
    # An update (nothing in the service updates visits; an operator's repair might) is both.
    for op, changes in (("insert", (("new_rows", ""),)), ("delete", (("old_rows", "-"),)),
                        ("update", (("old_rows", "-"), ("new_rows", "")))):
        body = ";\n            ".join(_aggregate(t, w, d, rows, sign) for rows, sign in changes for t, w, d in TABLES)
        helpers.execute(f"""CREATE OR REPLACE FUNCTION "__schema__".visits_rollup_{op}() RETURNS trigger
            LANGUAGE plpgsql AS $fn$
            BEGIN
            {body};
            RETURN NULL;
            END $fn$""")
        helpers.execute(f'DROP TRIGGER IF EXISTS visits_rollup_{op} ON "__schema__".visits')
        ref = {"insert": "NEW TABLE AS new_rows", "delete": "OLD TABLE AS old_rows",
               "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}[op]
        helpers.execute(f"""CREATE TRIGGER visits_rollup_{op} AFTER {op.upper()} ON "__schema__".visits
            REFERENCING {ref} FOR EACH STATEMENT EXECUTE FUNCTION "__schema__".visits_rollup_{op}()""")
    for table, width, dim in TABLES:
        helpers.execute(f'TRUNCATE "__schema__".{table}')
        helpers.execute(_aggregate(table, width, dim, '"__schema__".visits', ""))
    names = ", ".join(f"('{t}', true)" for t, _, _ in TABLES)
    helpers.execute(f"""INSERT INTO "__schema__".rollup_meta (name, ready) VALUES {names}
        ON CONFLICT (name) DO UPDATE SET ready = true""")


def downgrade() -> None:
    for op in ("insert", "delete", "update"):
        helpers.execute(f'DROP TRIGGER IF EXISTS visits_rollup_{op} ON "__schema__".visits')
        helpers.execute(f'DROP FUNCTION IF EXISTS "__schema__".visits_rollup_{op}()')
    for table, _, _ in TABLES:
        helpers.execute(f'DROP TABLE IF EXISTS "__schema__".{table}')
        helpers.execute(f"""DELETE FROM "__schema__".rollup_meta WHERE name = '{table}'""")
