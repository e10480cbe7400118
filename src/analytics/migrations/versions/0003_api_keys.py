"""api keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:50:00

Write the SQL out in full here (do not call the DDL helpers of the service: a revision must do
the same thing forever). See README, "Schema migrations".
"""
from __future__ import annotations

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

from analytics.migrations import helpers  # noqa: F401

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # API keys (issue 10): only the SHA-256 of a key is stored (a key holds 160 random bits, so
    # a fast hash is enough: nobody can enumerate the inputs), and its first characters for
    # display. A small table, read whole by every worker every KEYS_REFRESH_SECONDS.
    helpers.execute("""CREATE TABLE IF NOT EXISTS "__schema__".api_keys (
        name         text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
        prefix       text        NOT NULL,
        key_hash     bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
        scope        text        NOT NULL CHECK (scope IN ('read', 'ingest', 'admin')),
        created_at   timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at   timestamptz
    )""")


def downgrade() -> None:
    pass
