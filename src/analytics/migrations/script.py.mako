"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Write the SQL out in full here (do not call the DDL helpers of the service: a revision must do
the same thing forever). See README, "Schema migrations".
"""
from __future__ import annotations

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

from analytics.migrations import helpers  # noqa: F401

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    # e.g. op.add_column("events", sa.Column("country", sa.Text(), nullable=True))
    #      helpers.execute('CREATE INDEX IF NOT EXISTS ... ON "__schema__".events (...)')
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
