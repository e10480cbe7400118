"""retention state

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:40:00

Write the SQL out in full here (do not call the DDL helpers of the service: a revision must do
the same thing forever). See README, "Schema migrations".
"""
from __future__ import annotations

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

from analytics.migrations import helpers  # noqa: F401

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Issue 12, retention: the horizons before which raw events and rollups were dropped (the
    # read path refuses to answer from what is gone), and when the last run was. One row.
    helpers.execute("""CREATE TABLE IF NOT EXISTS "__schema__".retention_state (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            raw_horizon timestamptz,
            rollup_horizon timestamptz,
            last_run_at timestamptz)""")
    helpers.execute("""INSERT INTO "__schema__".retention_state (id) VALUES (true)
        ON CONFLICT (id) DO NOTHING""")


def downgrade() -> None:
    pass
