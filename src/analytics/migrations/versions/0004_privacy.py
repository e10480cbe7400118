"""privacy: visitor_id on events, the daily salts, unique-visitor rollups

Issue 10, "Privacy by default": events get `visitor_id` (a daily-salted BLAKE2 hash of client
IP, user agent and site; privacy/visitor.py), the salts live in `visitor_salts` so that every
worker and replica agrees (privacy/salts.py), and unique visitors are counted exactly by the
same first-seen machinery as unique sessions (rollups/sessions.py, subject VISITORS): the
state table `rollup_visitors`, its triggers and the `vis` tables. Frozen: rendered once from
those helpers; later changes need a new revision.

Nothing here rewrites a row: the new column is nullable (instant), the rows stored before have
no visitor_id, so the new rollups have nothing to catch up with and are ready at once. Stored
IP addresses are left as they are (an upgrade never destroys data by itself): `python -m
analytics privacy scrub` removes them (README, "Upgrading").

Revision ID: 0004
Revises: 0002 (re-chained onto 0003 at merge)
Create Date: 2026-12-02
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIS_TABLES = ['rollup_vis_total_15m', 'rollup_vis_total_1h', 'rollup_vis_total_1d', 'rollup_vis_page_1h', 'rollup_vis_page_1d']

STATEMENTS = [
    r"""ALTER TABLE "__schema__".events ADD COLUMN IF NOT EXISTS visitor_id bigint""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."visitor_salts" (
        day  date  PRIMARY KEY,
        salt bytea NOT NULL)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_visitors" (
            visitor_id bigint PRIMARY KEY,
            entries text[] NOT NULL,
            CONSTRAINT "rollup_visitors_entries_cap" CHECK (cardinality(entries) <= 20000 AND octet_length(array_to_string(entries, '')) <= 8000000))""",
    r"""DO $do$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_constraint
                           WHERE conrelid = '"__schema__"."rollup_visitors"'::regclass AND conname = 'rollup_visitors_entries_cap') THEN
                ALTER TABLE "__schema__"."rollup_visitors" ADD CONSTRAINT "rollup_visitors_entries_cap" CHECK (cardinality(entries) <= 20000 AND octet_length(array_to_string(entries, '')) <= 8000000) NOT VALID;
            END IF;
            END $do$""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_vis_total_15m" (bucket timestamptz NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_vis_total_1h" (bucket timestamptz NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_vis_total_1d" (bucket timestamptz NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_vis_page_1h" (bucket timestamptz NOT NULL, "page" text NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "page", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_vis_page_1d" (bucket timestamptz NOT NULL, "page" text NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "page", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE OR REPLACE FUNCTION "__schema__"."rollup_vis_on_insert"() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
                RETURN NULL;
            END IF;
            WITH d0 AS MATERIALIZED (
        SELECT visitor_id AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM (SELECT visitor_id, 1 AS ver, e FROM new_rows, unnest(entries) AS e) x),
"w0" AS (
        INSERT INTO "__schema__"."rollup_vis_total_15m" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 1) * 1 AS g FROM d0 ) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w1" AS (
        INSERT INTO "__schema__"."rollup_vis_total_1h" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 4) * 4 AS g FROM d0 ) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w2" AS (
        INSERT INTO "__schema__"."rollup_vis_total_1d" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 96) * 96 AS g FROM d0 ) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w3" AS (
        INSERT INTO "__schema__"."rollup_vis_page_1h" AS t (bucket, "page", prev, n)
        SELECT to_timestamp(g::bigint * 900), "page",
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, "page", lag(g) OVER (PARTITION BY ver, sid, "page" ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, "page", (b / 4) * 4 AS g FROM d0 ) d1) d2
        GROUP BY g, "page", p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket, "page", prev) DO UPDATE SET n = t.n + excluded.n),
"w4" AS (
        INSERT INTO "__schema__"."rollup_vis_page_1d" AS t (bucket, "page", prev, n)
        SELECT to_timestamp(g::bigint * 900), "page",
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, "page", lag(g) OVER (PARTITION BY ver, sid, "page" ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, "page", (b / 96) * 96 AS g FROM d0 ) d1) d2
        GROUP BY g, "page", p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket, "page", prev) DO UPDATE SET n = t.n + excluded.n) SELECT 1 INTO _done;
            RETURN NULL;
            END $fn$""",
    r"""CREATE OR REPLACE TRIGGER "rollup_vis_insert" AFTER INSERT ON "__schema__"."rollup_visitors"
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "__schema__"."rollup_vis_on_insert"()""",
    r"""CREATE OR REPLACE FUNCTION "__schema__"."rollup_vis_on_update"() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
                RETURN NULL;
            END IF;
            WITH d0 AS MATERIALIZED (
        SELECT visitor_id AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM (SELECT visitor_id, 1 AS ver, e FROM new_rows, unnest(entries) AS e UNION ALL SELECT visitor_id, -1, e FROM old_rows, unnest(entries) AS e) x),
chg AS MATERIALIZED (
            (SELECT sid, b, page FROM d0 WHERE ver = 1 EXCEPT SELECT sid, b, page FROM d0 WHERE ver = -1)
            UNION ALL (SELECT sid, b, page FROM d0 WHERE ver = -1 EXCEPT SELECT sid, b, page FROM d0 WHERE ver = 1)),
"w0" AS (
        INSERT INTO "__schema__"."rollup_vis_total_15m" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 1) * 1 AS g FROM d0 WHERE ("sid") IN (SELECT "sid" FROM chg)) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w1" AS (
        INSERT INTO "__schema__"."rollup_vis_total_1h" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 4) * 4 AS g FROM d0 WHERE ("sid") IN (SELECT "sid" FROM chg)) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w2" AS (
        INSERT INTO "__schema__"."rollup_vis_total_1d" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 96) * 96 AS g FROM d0 WHERE ("sid") IN (SELECT "sid" FROM chg)) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w3" AS (
        INSERT INTO "__schema__"."rollup_vis_page_1h" AS t (bucket, "page", prev, n)
        SELECT to_timestamp(g::bigint * 900), "page",
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, "page", lag(g) OVER (PARTITION BY ver, sid, "page" ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, "page", (b / 4) * 4 AS g FROM d0 WHERE ("sid", "page") IN (SELECT "sid", "page" FROM chg)) d1) d2
        GROUP BY g, "page", p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket, "page", prev) DO UPDATE SET n = t.n + excluded.n),
"w4" AS (
        INSERT INTO "__schema__"."rollup_vis_page_1d" AS t (bucket, "page", prev, n)
        SELECT to_timestamp(g::bigint * 900), "page",
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, "page", lag(g) OVER (PARTITION BY ver, sid, "page" ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, "page", (b / 96) * 96 AS g FROM d0 WHERE ("sid", "page") IN (SELECT "sid", "page" FROM chg)) d1) d2
        GROUP BY g, "page", p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket, "page", prev) DO UPDATE SET n = t.n + excluded.n) SELECT 1 INTO _done;
            RETURN NULL;
            END $fn$""",
    r"""CREATE OR REPLACE TRIGGER "rollup_vis_update" AFTER UPDATE ON "__schema__"."rollup_visitors"
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "__schema__"."rollup_vis_on_update"()""",
    r"""CREATE OR REPLACE FUNCTION "__schema__"."rollup_vis_on_delete"() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
                RETURN NULL;
            END IF;
            WITH d0 AS MATERIALIZED (
        SELECT visitor_id AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM (SELECT visitor_id, -1 AS ver, e FROM old_rows, unnest(entries) AS e) x),
"w0" AS (
        INSERT INTO "__schema__"."rollup_vis_total_15m" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 1) * 1 AS g FROM d0 ) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w1" AS (
        INSERT INTO "__schema__"."rollup_vis_total_1h" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 4) * 4 AS g FROM d0 ) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w2" AS (
        INSERT INTO "__schema__"."rollup_vis_total_1d" AS t (bucket, prev, n)
        SELECT to_timestamp(g::bigint * 900),
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, lag(g) OVER (PARTITION BY ver, sid ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, (b / 96) * 96 AS g FROM d0 ) d1) d2
        GROUP BY g, p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2
        ON CONFLICT (bucket, prev) DO UPDATE SET n = t.n + excluded.n),
"w3" AS (
        INSERT INTO "__schema__"."rollup_vis_page_1h" AS t (bucket, "page", prev, n)
        SELECT to_timestamp(g::bigint * 900), "page",
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, "page", lag(g) OVER (PARTITION BY ver, sid, "page" ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, "page", (b / 4) * 4 AS g FROM d0 ) d1) d2
        GROUP BY g, "page", p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket, "page", prev) DO UPDATE SET n = t.n + excluded.n),
"w4" AS (
        INSERT INTO "__schema__"."rollup_vis_page_1d" AS t (bucket, "page", prev, n)
        SELECT to_timestamp(g::bigint * 900), "page",
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * 900) END,
               sum(ver)
        FROM (SELECT ver, g, "page", lag(g) OVER (PARTITION BY ver, sid, "page" ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid, "page", (b / 96) * 96 AS g FROM d0 ) d1) d2
        GROUP BY g, "page", p
        HAVING sum(ver) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket, "page", prev) DO UPDATE SET n = t.n + excluded.n) SELECT 1 INTO _done;
            RETURN NULL;
            END $fn$""",
    r"""CREATE OR REPLACE TRIGGER "rollup_vis_delete" AFTER DELETE ON "__schema__"."rollup_visitors"
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "__schema__"."rollup_vis_on_delete"()""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        helpers.execute(statement)
    # Ready from birth: no stored event has a visitor_id yet.
    helpers.execute("""INSERT INTO "__schema__".rollup_meta (name, ready)
        SELECT t, true FROM unnest('{%s}'::text[]) AS t
        ON CONFLICT (name) DO NOTHING""" % ",".join(VIS_TABLES))


def downgrade() -> None:
    raise NotImplementedError("not undone: restore from a backup, or drop the schema")
