"""rollups for the dashboard filtered by a page: `pagegeo` (page x country x event name),
`pageutm` (page x utm_source) and `dur` by page (its exact duration histogram), all by day

Without them a page filter made the country, UTM and event-name panels and the median time on
page raw scans of that page's events (7.7 s for one page at 10M events over 30 days).

A database that already holds events gets the three tables empty and 'not ready': readers ignore
them (answering from raw events, as before) until `python -m analytics.rollups rebuild
--missing` fills them from the events (only them: the other rollups are not touched). A database
without events has them ready at once. The service maintains them at ingest from this revision
on, ready or not.

Frozen: rendered once from rollups/ddl.py; later changes need a new revision.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLES = ("rollup_agg_pagegeo_1d", "rollup_agg_pageutm_1d", "rollup_dur_page_1d")
CREATE = (
    'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_pagegeo_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, "country" text NOT NULL, "name" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "country", "name")) WITH (fillfactor = 90)',
    'CREATE INDEX IF NOT EXISTS "rollup_agg_pagegeo_1d_page" ON "__schema__"."rollup_agg_pagegeo_1d" (page, bucket)',
    'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_agg_pageutm_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, "utm_source" text NOT NULL, events bigint NOT NULL, dur_sum bigint NOT NULL, dur_n bigint NOT NULL, custom bigint DEFAULT 0 NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "utm_source")) WITH (fillfactor = 90)',
    'CREATE TABLE IF NOT EXISTS "__schema__"."rollup_dur_page_1d" (bucket timestamptz NOT NULL, is_bot boolean NOT NULL, "page" text NOT NULL, duration integer NOT NULL, n bigint NOT NULL, PRIMARY KEY ("bucket", "is_bot", "page", "duration")) WITH (fillfactor = 90)',
    'CREATE INDEX IF NOT EXISTS "rollup_dur_page_1d_page" ON "__schema__"."rollup_dur_page_1d" (page, bucket)',
)


def upgrade() -> None:
    for stmt in CREATE:
        helpers.execute(stmt)
    names = ", ".join(f"('{t}')" for t in TABLES)
    helpers.execute(f"""INSERT INTO "__schema__".rollup_meta (name, ready)
        SELECT t, NOT EXISTS (SELECT 1 FROM "__schema__".events LIMIT 1) FROM (VALUES {names}) AS v(t)
        ON CONFLICT (name) DO NOTHING""")


def downgrade() -> None:
    for table in TABLES:
        helpers.execute(f'DELETE FROM "__schema__".rollup_meta WHERE name = \'{table}\'')
        helpers.execute(f'DROP TABLE IF EXISTS "__schema__"."{table}"')
