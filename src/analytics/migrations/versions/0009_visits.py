"""visits: one row per visit, maintained at ingest (issue 11, part 2)

Revision ID: 0009
Revises: 0008 (written on 0007; re-chained at merge)
Create Date: 2026-12-02

The `visits` table and the `visits_fold` function the ingest hook calls (rollups/visits.py
describes the same objects for the code and explains them). Written out in full: a revision
must do the same thing forever. A database holding events gets its visits from
`python -m analytics rollups rebuild`.
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

def upgrade() -> None:
    helpers.execute("""CREATE TABLE IF NOT EXISTS "__schema__".visits (
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
            referrer_host text        NOT NULL)""")
    helpers.execute('CREATE INDEX IF NOT EXISTS visits_visitor_idx ON "__schema__".visits (visitor_id, started)')
    helpers.execute('CREATE INDEX IF NOT EXISTS visits_started_idx ON "__schema__".visits (started)')
    helpers.execute(r"""CREATE OR REPLACE FUNCTION "__schema__".visits_fold(batch "__schema__".visits[], timeout interval)
        RETURNS SETOF "__schema__".visits LANGUAGE plpgsql AS $fn$
        BEGIN
            IF batch IS NULL THEN
                RETURN;
            END IF;
            -- One visitor's writers serialise here; key order: no deadlock between writers.
            PERFORM pg_advisory_xact_lock(1170, k)
            FROM (SELECT DISTINCT hashint8(visitor_id) AS k FROM unnest(batch) ORDER BY 1) keys;
            RETURN QUERY
            WITH b AS (SELECT * FROM unnest(batch)),
                 span AS (SELECT visitor_id, min(started) AS lo, max(ended) AS hi FROM b GROUP BY visitor_id),
                 gone AS (DELETE FROM "__schema__".visits v USING span
                          WHERE v.visitor_id = span.visitor_id
                            AND v.ended >= span.lo - timeout AND v.started <= span.hi + timeout
                          RETURNING v.*),
                 items AS (SELECT * FROM b UNION ALL SELECT * FROM gone)
            SELECT visitor_id, min(started), max(ended), (array_agg(first_id ORDER BY started, first_id))[1],
            sum(pageviews)::int, sum(events)::int, sum(interactions)::int,
            min(entry_at), (array_agg(entry_id ORDER BY entry_at, entry_id) FILTER (WHERE entry_at IS NOT NULL))[1], coalesce((array_agg(entry_page ORDER BY entry_at, entry_id) FILTER (WHERE entry_at IS NOT NULL))[1], ''),
            max(exit_at), (array_agg(exit_id ORDER BY exit_at DESC, exit_id DESC) FILTER (WHERE exit_at IS NOT NULL))[1], coalesce((array_agg(exit_page ORDER BY exit_at DESC, exit_id DESC) FILTER (WHERE exit_at IS NOT NULL))[1], ''),
            (array_agg(os ORDER BY started, first_id))[1], (array_agg(browser ORDER BY started, first_id))[1], (array_agg(device ORDER BY started, first_id))[1],
            (array_agg(referrer_host ORDER BY started, first_id))[1]
        FROM (SELECT o.*, sum(brk) OVER (PARTITION BY visitor_id ORDER BY started, ended, first_id
                                         ROWS UNBOUNDED PRECEDING) AS isl
              FROM (SELECT i.*, CASE WHEN started - max(ended) OVER w > timeout THEN 1 ELSE 0 END AS brk
                    FROM items i
                    WINDOW w AS (PARTITION BY visitor_id ORDER BY started, ended, first_id
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) o) n
        GROUP BY visitor_id, isl;
        END $fn$""")


def downgrade() -> None:
    helpers.execute('DROP FUNCTION IF EXISTS "__schema__".visits_fold("__schema__".visits[], interval)')
    helpers.execute('DROP TABLE IF EXISTS "__schema__".visits')
