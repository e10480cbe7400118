"""import checkpoints

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

The checkpoint of `python -m analytics import` (issue 12, part 3): one row per input file,
updated in the transaction that stores the rows it covers. Written out in full (a revision
must do the same thing forever); importer/ddl.py describes the same table for the code.
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    helpers.execute("""CREATE TABLE IF NOT EXISTS "__schema__".import_checkpoints (
            fingerprint   text        PRIMARY KEY,
            path          text        NOT NULL,
            format        text        NOT NULL,
            phase         text        NOT NULL DEFAULT 'load',
            position      bigint      NOT NULL DEFAULT 0,
            line          bigint      NOT NULL DEFAULT 0,
            rows_read     bigint      NOT NULL DEFAULT 0,
            stored        bigint      NOT NULL DEFAULT 0,
            duplicates    bigint      NOT NULL DEFAULT 0,
            rejected      bigint      NOT NULL DEFAULT 0,
            rejects_bytes bigint      NOT NULL DEFAULT 0,
            days          integer[]   NOT NULL DEFAULT '{}',
            started_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )""")


def downgrade() -> None:
    helpers.execute('DROP TABLE IF EXISTS "__schema__".import_checkpoints')
