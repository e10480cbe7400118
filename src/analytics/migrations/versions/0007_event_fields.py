"""event fields: name, props, hostname, UTM parameters, country

Issue 11, part 1: events get a `name` ('pageview' unless a custom event), `props` (a small JSON
object), the `hostname` of the page, the page URL's `utm_source`, `utm_medium` and
`utm_campaign`, and the `country` (ISO 3166 alpha-2) looked up from the client address at
ingest, before the address is discarded (ingestion/geo.py).

Nothing here rewrites a row: every column is either nullable or has a constant default
(PostgreSQL stores such a default once, in the catalog), so the upgrade is instant at any size;
events stored before read as pageviews with no hostname, UTM or country.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = [
    ("name", "text NOT NULL DEFAULT 'pageview'"),
    ("props", "jsonb"),
    ("hostname", "text NOT NULL DEFAULT ''"),
    ("utm_source", "text NOT NULL DEFAULT ''"),
    ("utm_medium", "text NOT NULL DEFAULT ''"),
    ("utm_campaign", "text NOT NULL DEFAULT ''"),
    ("country", "text NOT NULL DEFAULT ''"),
]


def upgrade() -> None:
    for column, decl in COLUMNS:
        helpers.execute(f'ALTER TABLE "__schema__".events ADD COLUMN IF NOT EXISTS {column} {decl}')


def downgrade() -> None:
    for column, _ in reversed(COLUMNS):
        helpers.execute(f'ALTER TABLE "__schema__".events DROP COLUMN IF EXISTS {column}')
