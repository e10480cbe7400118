"""event fields in the rollups: the `custom` partial and the evt/geo/utm/src families (issue 11 part 1)

- Every `agg` rollup gets `custom` (events that are not pageviews), default 0: the rows stored
  before were all pageviews (nothing filled `events.name` before this revision), so no row is
  rewritten (a constant default is kept in the catalog: instant at any size). The `pageviews`
  metric is `events - custom` over any agg rollup.
- Families for name, hostname, country, utm_source, utm_medium, utm_campaign (rollups/catalog.py):
  `evt` (name, hostname), `geo` (country), `utm` (the three) at 1 hour and 1 day, and `src` (all
  six) at 1 day. Their tables start with what the `total` family holds, as events stored before
  this revision are all ('pageview', '', ...): an INSERT ... SELECT of the small total tables,
  so they are as ready as those are, without a rebuild.

Frozen: rendered once from rollups/ddl.py; later changes need a new revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DIMS = {'rollup_agg_evt_1h': ['name', 'hostname'], 'rollup_agg_evt_1d': ['name', 'hostname'], 'rollup_agg_geo_1h': ['country'], 'rollup_agg_geo_1d': ['country'], 'rollup_agg_utm_1h': ['utm_source', 'utm_medium', 'utm_campaign'], 'rollup_agg_utm_1d': ['utm_source', 'utm_medium', 'utm_campaign'], 'rollup_agg_src_1d': ['name', 'hostname', 'country', 'utm_source', 'utm_medium', 'utm_campaign']}  # each new table's dimension columns
OLD_AGG_TABLES = ['rollup_agg_total_1m', 'rollup_agg_total_5m', 'rollup_agg_total_15m', 'rollup_agg_total_1h', 'rollup_agg_total_1d', 'rollup_agg_tech_15m', 'rollup_agg_tech_1h', 'rollup_agg_tech_1d', 'rollup_agg_page_1h', 'rollup_agg_page_1d', 'rollup_agg_reftech_1h', 'rollup_agg_reftech_1d', 'rollup_agg_pageos_1d', 'rollup_agg_pagetech_1d', 'rollup_agg_pageref_1d', 'rollup_agg_all_1d']
SRC_TABLES = {'rollup_agg_evt_1h': 'rollup_agg_total_1h', 'rollup_agg_evt_1d': 'rollup_agg_total_1d', 'rollup_agg_geo_1h': 'rollup_agg_total_1h', 'rollup_agg_geo_1d': 'rollup_agg_total_1d', 'rollup_agg_utm_1h': 'rollup_agg_total_1h', 'rollup_agg_utm_1d': 'rollup_agg_total_1d', 'rollup_agg_src_1d': 'rollup_agg_total_1d'}  # new table -> the total table it starts from

CREATE = ['CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_evt_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "name" text NOT NULL, "hostname" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "name", "hostname")) WITH (fillfactor = 90)', 'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_evt_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "name" text NOT NULL, "hostname" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "name", "hostname")) WITH (fillfactor = 90)', 'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_geo_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "country" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "country")) WITH (fillfactor = 90)', 'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_geo_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "country" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "country")) WITH (fillfactor = 90)', 'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_utm_1h" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "utm_source" text NOT NULL, "utm_medium" text NOT NULL, "utm_campaign" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "utm_source", "utm_medium", "utm_campaign")) WITH (fillfactor = 90)', 'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_utm_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "utm_source" text NOT NULL, "utm_medium" text NOT NULL, "utm_campaign" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "utm_source", "utm_medium", "utm_campaign")) WITH (fillfactor = 90)', 'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_src_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "name" text NOT NULL, "hostname" text NOT NULL, "country" text NOT NULL, "utm_source" text NOT NULL, "utm_medium" text NOT NULL, "utm_campaign" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "name", "hostname", "country", "utm_source", "utm_medium", "utm_campaign")) WITH (fillfactor = 90)']


def upgrade() -> None:
    for table in OLD_AGG_TABLES:
        helpers.execute(f'ALTER TABLE "__schema__"."{table}" ADD COLUMN IF NOT EXISTS custom bigint DEFAULT 0 NOT NULL')
    for stmt in CREATE:
        helpers.execute(stmt)
    for table, total in SRC_TABLES.items():
        # what every event stored before this revision has: name 'pageview', the rest ''
        values = ", ".join("'pageview'" if c == "name" else "''" for c in DIMS[table])
        helpers.execute(f'''INSERT INTO "__schema__"."{table}"
            (bucket, is_bot, {", ".join(DIMS[table])}, events, dur_sum, dur_n, custom)
            SELECT bucket, is_bot, {values}, events, dur_sum, dur_n, 0
            FROM "__schema__"."{total}" ON CONFLICT DO NOTHING''')
        helpers.execute(f'''INSERT INTO "__schema__".rollup_meta (name, ready)
            SELECT '{table}', coalesce((SELECT ready FROM "__schema__".rollup_meta WHERE name = '{total}'),
                                        NOT EXISTS (SELECT 1 FROM "__schema__".events LIMIT 1))
            ON CONFLICT (name) DO NOTHING''')


def downgrade() -> None:
    for table in SRC_TABLES:
        helpers.execute(f'DELETE FROM "__schema__".rollup_meta WHERE name = \'{table}\'')
        helpers.execute(f'DROP TABLE IF EXISTS "__schema__"."{table}"')
    for table in OLD_AGG_TABLES:
        helpers.execute(f'ALTER TABLE "__schema__"."{table}" DROP COLUMN IF EXISTS custom')
