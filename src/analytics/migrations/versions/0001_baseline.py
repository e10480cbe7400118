"""Baseline: the schema as the service's bootstrap created it before migrations.

The events hypertable and its indexes, the rollup tables, `rollup_meta`, the session state
table and its first-seen triggers. Frozen: the statements below were rendered once from
`schema.events_ddl()` and `rollups.rollup_ddl()` as they were at commit d242daf (the schema
written as "__schema__", substituted when run); later changes to those helpers do not change
what this revision does (they need a new revision). Every statement is idempotent (IF NOT
EXISTS, OR REPLACE, ON CONFLICT DO NOTHING, create_hypertable's if_not_exists), so running it
on a database that an older version made brings it to this baseline without touching a row.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""
from __future__ import annotations

import hashlib

from psycopg import sql

from analytics.migrations import helpers

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Verbatim from the bootstrap of old, so that legacy_digest() reproduces what it recorded.
_CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {}"
_HYPERTABLE = """SELECT create_hypertable({}, by_range('time', {}::interval),
                                             if_not_exists => true)"""


def _hypertable(schema: str, chunk_interval: str) -> sql.Composable:
    # The chunk interval is a setting (EVENTS_CHUNK_INTERVAL), read when the table is created.
    return sql.SQL(_HYPERTABLE).format(
        sql.Literal('"' + schema.replace('"', '""') + '".events'), sql.Literal(chunk_interval))


def upgrade() -> None:
    helpers.execute(EVENTS_TABLE)
    helpers.execute(_hypertable(helpers.schema(), helpers.settings().events_chunk_interval))
    for statement in STATEMENTS:
        helpers.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone; drop the schema to start over")


def legacy_digest(conn, schema: str, chunk_interval: str) -> str:
    """The SHA-256 that the bootstrap of old stored in `schema_ddl` after running exactly this
    DDL for `schema` (`conn`: a psycopg connection, for quoting as it did)."""
    ident = sql.Identifier(schema).as_string(conn)
    statements = [sql.SQL(_CREATE_SCHEMA).format(sql.Identifier(schema)).as_string(conn),
                  EVENTS_TABLE.replace(helpers.SCHEMA_TOKEN, ident),
                  _hypertable(schema, chunk_interval).as_string(conn),
                  *(s.replace(helpers.SCHEMA_TOKEN, ident) for s in STATEMENTS)]
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()


EVENTS_TABLE = r"""
        CREATE TABLE IF NOT EXISTS "__schema__".events (
            id            uuid        NOT NULL,
            time          timestamptz NOT NULL,
            page          text        NOT NULL,
            ip_address    text,
            user_agent    text,
            referrer      text,
            referrer_host text        NOT NULL DEFAULT '',
            session_id    text,
            duration      integer,
            description   text,
            os            text        NOT NULL DEFAULT 'Other',
            browser       text        NOT NULL DEFAULT 'Other',
            device        text        NOT NULL DEFAULT 'other',
            is_bot        boolean     NOT NULL DEFAULT false
        )"""

STATEMENTS = (
    r"""CREATE UNIQUE INDEX IF NOT EXISTS events_id_time_key ON "__schema__".events (id, time)""",
    r"""CREATE INDEX IF NOT EXISTS events_page_time_idx ON "__schema__".events (page, time DESC)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_meta" (
            name text PRIMARY KEY, ready boolean NOT NULL, rebuilt_at timestamptz)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_sessions" (
            session_id text PRIMARY KEY,
            entries text[] NOT NULL)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_total_1m" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_total_5m" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_total_15m" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_total_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_total_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_tech_15m" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "os", "browser", "device")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_tech_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "os", "browser", "device")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_tech_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "os", "browser", "device")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_page_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page")) WITH (fillfactor = 90)""",
    r"""CREATE INDEX IF NOT EXISTS "rollup_agg_page_1h_page" ON "__schema__"."rollup_agg_page_1h" (page, bucket)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_page_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page")) WITH (fillfactor = 90)""",
    r"""CREATE INDEX IF NOT EXISTS "rollup_agg_page_1d_page" ON "__schema__"."rollup_agg_page_1d" (page, bucket)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_reftech_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "referrer_host" text NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "referrer_host", "os", "browser", "device")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_reftech_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "referrer_host" text NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "referrer_host", "os", "browser", "device")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_pageos_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, "os" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "os")) WITH (fillfactor = 90)""",
    r"""CREATE INDEX IF NOT EXISTS "rollup_agg_pageos_1d_page" ON "__schema__"."rollup_agg_pageos_1d" (page, bucket)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_pagetech_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "os", "browser", "device")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_pageref_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, "referrer_host" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "referrer_host")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_all_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, "os" text NOT NULL, "browser" text NOT NULL, "device" text NOT NULL, "referrer_host" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "os", "browser", "device", "referrer_host")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_dur_total_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, duration integer NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "duration")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_dur_total_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, duration integer NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "duration")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_ses_total_15m" (bucket timestamptz NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_ses_total_1h" (bucket timestamptz NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_ses_total_1d" (bucket timestamptz NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_ses_page_1h" (bucket timestamptz NOT NULL, "page" text NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "page", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE TABLE IF NOT EXISTS "__schema__"."rollup_ses_page_1d" (bucket timestamptz NOT NULL, "page" text NOT NULL, prev timestamptz NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "page", "prev")) WITH (fillfactor = 90)""",
    r"""CREATE OR REPLACE FUNCTION "__schema__"."rollup_ses_on_insert"() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
                RETURN NULL;
            END IF;
            WITH d0 AS MATERIALIZED (
        SELECT session_id COLLATE "C" AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM (SELECT session_id, 1 AS ver, e FROM new_rows, unnest(entries) AS e) x),
"w0" AS (
        INSERT INTO "__schema__"."rollup_ses_total_15m" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_total_1h" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_total_1d" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_page_1h" AS t (bucket, "page", prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_page_1d" AS t (bucket, "page", prev, n)
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
    r"""CREATE OR REPLACE TRIGGER "rollup_ses_insert" AFTER INSERT ON "__schema__"."rollup_sessions"
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "__schema__"."rollup_ses_on_insert"()""",
    r"""CREATE OR REPLACE FUNCTION "__schema__"."rollup_ses_on_update"() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
                RETURN NULL;
            END IF;
            WITH d0 AS MATERIALIZED (
        SELECT session_id COLLATE "C" AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM (SELECT session_id, 1 AS ver, e FROM new_rows, unnest(entries) AS e UNION ALL SELECT session_id, -1, e FROM old_rows, unnest(entries) AS e) x),
chg AS MATERIALIZED (
            (SELECT sid, b, page FROM d0 WHERE ver = 1 EXCEPT SELECT sid, b, page FROM d0 WHERE ver = -1)
            UNION ALL (SELECT sid, b, page FROM d0 WHERE ver = -1 EXCEPT SELECT sid, b, page FROM d0 WHERE ver = 1)),
"w0" AS (
        INSERT INTO "__schema__"."rollup_ses_total_15m" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_total_1h" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_total_1d" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_page_1h" AS t (bucket, "page", prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_page_1d" AS t (bucket, "page", prev, n)
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
    r"""CREATE OR REPLACE TRIGGER "rollup_ses_update" AFTER UPDATE ON "__schema__"."rollup_sessions"
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "__schema__"."rollup_ses_on_update"()""",
    r"""CREATE OR REPLACE FUNCTION "__schema__"."rollup_ses_on_delete"() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
                RETURN NULL;
            END IF;
            WITH d0 AS MATERIALIZED (
        SELECT session_id COLLATE "C" AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM (SELECT session_id, -1 AS ver, e FROM old_rows, unnest(entries) AS e) x),
"w0" AS (
        INSERT INTO "__schema__"."rollup_ses_total_15m" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_total_1h" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_total_1d" AS t (bucket, prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_page_1h" AS t (bucket, "page", prev, n)
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
        INSERT INTO "__schema__"."rollup_ses_page_1d" AS t (bucket, "page", prev, n)
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
    r"""CREATE OR REPLACE TRIGGER "rollup_ses_delete" AFTER DELETE ON "__schema__"."rollup_sessions"
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "__schema__"."rollup_ses_on_delete"()""",
    r"""INSERT INTO "__schema__"."rollup_meta" (name, ready)
        SELECT t, NOT EXISTS (SELECT 1 FROM "__schema__".events LIMIT 1) FROM unnest('{rollup_agg_total_1m,rollup_agg_total_5m,rollup_agg_total_15m,rollup_agg_total_1h,rollup_agg_total_1d,rollup_agg_tech_15m,rollup_agg_tech_1h,rollup_agg_tech_1d,rollup_agg_page_1h,rollup_agg_page_1d,rollup_agg_reftech_1h,rollup_agg_reftech_1d,rollup_agg_pageos_1d,rollup_agg_pagetech_1d,rollup_agg_pageref_1d,rollup_agg_all_1d,rollup_dur_total_1h,rollup_dur_total_1d,rollup_ses_total_15m,rollup_ses_total_1h,rollup_ses_total_1d,rollup_ses_page_1h,rollup_ses_page_1d}'::text[]) AS t
        ON CONFLICT (name) DO NOTHING""",
)
