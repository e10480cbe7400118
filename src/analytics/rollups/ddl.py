"""Rollup tables as this code expects them, beside the events hypertable (the migrations create
them: the baseline revision froze this output; later changes need a new revision).
Plain tables with a primary key led by the bucket: every read is a bucket range scan, every
write an upsert on the key. A table created after events already exist starts 'not ready' in
`rollup_meta`, so the planner ignores it until `python -m analytics.rollups rebuild` fills it.
"""
from __future__ import annotations

from psycopg import sql

from ..catalog import AGG_PARTIALS
from .catalog import FAMILIES, Family
from .sessions import SUBJECTS, state_ddl, trigger_ddl
from .visits import visits_ddl

META_TABLE = "rollup_meta"


def _table_ddl(s: sql.Identifier, fam: Family, grain: int) -> sql.Composable:
    dims = [sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in fam.columns]
    keys = [sql.Identifier(c) for c in fam.columns]
    if fam.kind == "agg":
        cols = [sql.SQL("bucket timestamptz NOT NULL"), sql.SQL("is_bot boolean NOT NULL"), *dims,
                *(sql.SQL(f"{c.name} {c.sql_type} NOT NULL")  # our names, written as before
                  for c in AGG_PARTIALS)]
        pk = [sql.Identifier("bucket"), sql.Identifier("is_bot"), *keys]
    elif fam.kind == "dur":
        cols = [sql.SQL("bucket timestamptz NOT NULL"), sql.SQL("is_bot boolean NOT NULL"), *dims,
                sql.SQL("duration integer NOT NULL"), sql.SQL("n bigint NOT NULL")]
        pk = [sql.Identifier("bucket"), sql.Identifier("is_bot"), *keys, sql.Identifier("duration")]
    else:
        cols = [sql.SQL("bucket timestamptz NOT NULL"), *dims, sql.SQL("prev timestamptz NOT NULL"),
                sql.SQL("n bigint NOT NULL")]
        pk = [sql.Identifier("bucket"), *keys, sql.Identifier("prev")]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY ({})) WITH (fillfactor = 90)").format(
        s, sql.Identifier(fam.table(grain)), sql.SQL(", ").join(cols), sql.SQL(", ").join(pk))


def all_tables() -> list[str]:
    return [t for fam in FAMILIES for _, t in fam.tables()]


def rollup_ddl(schema: str) -> list[sql.Composable]:
    s = sql.Identifier(schema)
    out: list[sql.Composable] = [
        sql.SQL("""CREATE TABLE IF NOT EXISTS {}.{} (
            name text PRIMARY KEY, ready boolean NOT NULL, rebuilt_at timestamptz)""").format(
            s, sql.Identifier(META_TABLE)),
    ]
    for subj in SUBJECTS:
        out += state_ddl(s, subj)
    for fam in FAMILIES:
        for g, table in fam.tables():
            out.append(_table_ddl(s, fam, g))
            if fam.page_index:
                out.append(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (page, bucket)").format(
                    sql.Identifier(f"{table}_page"), s, sql.Identifier(table)))
    for subj in SUBJECTS:
        out += trigger_ddl(s, subj)
    # A rollup is ready from birth only if there is nothing to catch up with.
    out.append(sql.SQL("""INSERT INTO {s}.{meta} (name, ready)
        SELECT t, NOT EXISTS (SELECT 1 FROM {s}.events LIMIT 1) FROM unnest({names}::text[]) AS t
        ON CONFLICT (name) DO NOTHING""").format(
        s=s, meta=sql.Identifier(META_TABLE), names=sql.Literal(all_tables())))
    return out + visits_ddl(schema)
