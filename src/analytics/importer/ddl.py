"""The import checkpoint table, as this code expects it (revision 0006 creates it).

One row per input file (keyed by its fingerprint): how far the load got, in the same
transaction as the rows it covers, so a resumed import never loses or repeats a row.
"""
from __future__ import annotations

from psycopg import sql

CHECKPOINT_TABLE = "import_checkpoints"


def import_ddl(schema: str) -> list[sql.Composable]:
    return [sql.SQL("""CREATE TABLE IF NOT EXISTS {}.{} (
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
            days          integer[]   NOT NULL DEFAULT '{{}}',
            started_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )""").format(sql.Identifier(schema), sql.Identifier(CHECKPOINT_TABLE))]
