"""cap session entries

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:38:27.478543

Write the SQL out in full here (do not call the DDL helpers of the service: a revision must do
the same thing forever). See README, "Schema migrations".
"""
from __future__ import annotations

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

from analytics.migrations import helpers  # noqa: F401

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A session's stored entries are bounded (issue 9): an event that would take a session past
    # 5,000 (quarter hour, page) entries or 2 MB of their text is refused, as that event's 422
    # naming session_id. NOT VALID: enforced on every write from now on, without scanning the
    # existing rows (and without failing the upgrade if one is already over).
    helpers.execute("""ALTER TABLE "__schema__".rollup_sessions
        ADD CONSTRAINT rollup_sessions_entries_cap
        CHECK (cardinality(entries) <= 5000 AND octet_length(array_to_string(entries, '')) <= 2000000)
        NOT VALID""")


def downgrade() -> None:
    pass
