"""Rollup maintenance at ingest and at rebuild: the same SQL, fed from different relations.

At ingest the source is `ins`, the rows the events INSERT actually stored (duplicates
excluded), inside the same statement and transaction. `ins` is first aggregated once per kind
into a base at the finest grain with every dimension (`ins_agg`, `ins_dur`); each rollup then
sums that base instead of re-reading every row: events of a batch share minutes and dimension
values, so the base is several times smaller than the batch (measured in bench/README.md).
Each upsert feeds its rows in key order, so concurrent writers lock rollup rows in the same
order and cannot deadlock on them.
"""
from __future__ import annotations

from functools import cache

from psycopg import sql

from ..catalog import AGG_PARTIALS
from .catalog import DIMENSIONS, Family, families
from .sessions import SUBJECTS, new_entries_from, upsert_state_sql

# Pre-aggregated bases of `ins`, shaped like rollup rows (bucket, is_bot, every dimension, ...).
AGG_BASE, DUR_BASE = "ins_agg", "ins_dur"


def _cols(fam: Family) -> list[sql.Identifier]:
    return [sql.Identifier(c) for c in fam.columns]


def _prefixed(idents: list[sql.Identifier]) -> sql.Composable:
    return sql.SQL("").join(sql.SQL(", {}").format(i) for i in idents)


def agg_upsert(fam: Family, grain: int, source: str, *, where: sql.Composable = sql.SQL("TRUE"),
               additive: bool = True) -> sql.Composable:
    """Aggregate events-shaped `source` into fam's table at `grain`.

    `source` has either raw columns (time, duration) or, when it is a finer rollup table of the
    same family or a base of `ins`, rollup columns (bucket, events, dur_sum, dur_n | n);
    `additive` adds to existing rows.
    """
    cols = _prefixed(_cols(fam))
    from_rollup = source.startswith("rollup_") or source in (AGG_BASE, DUR_BASE)
    t = sql.SQL("bucket") if from_rollup else sql.SQL("time")
    if fam.kind == "agg":
        values = sql.SQL(", ".join(c.merge if from_rollup else c.raw for c in AGG_PARTIALS))
        names = sql.SQL(", ".join(c.name for c in AGG_PARTIALS))
        key = sql.SQL("")
        # every partial is a sum: an upsert adds
        update = sql.SQL(", ".join(f"{c.name} = r.{c.name} + excluded.{c.name}" for c in AGG_PARTIALS))
        extra_where = sql.SQL("")
    else:  # dur
        values = sql.SQL("sum(n)") if from_rollup else sql.SQL("count(*)")
        names = sql.SQL("n")
        key = sql.SQL(", duration")
        update = sql.SQL("n = r.n + excluded.n")
        extra_where = sql.SQL("" if from_rollup else " AND duration IS NOT NULL")
    conflict = (sql.SQL("ON CONFLICT (bucket, is_bot{cols}{key}) DO UPDATE SET {update}").format(
        cols=cols, key=key, update=update) if additive else sql.SQL(""))
    return sql.SQL("""INSERT INTO {table} AS r (bucket, is_bot{cols}{key}, {names})
        SELECT time_bucket({width}::interval, {t}), is_bot{cols}{key}, {values}
        FROM {source} WHERE ({where}){extra_where}
        GROUP BY 1, 2{cols}{key}
        ORDER BY 1, 2{cols}{key}
        {conflict}""").format(
        table=sql.Identifier(fam.table(grain)), cols=cols, key=key, names=names,
        width=sql.Literal(f"{grain} seconds"), t=t, values=values, source=sql.Identifier(source),
        where=where, extra_where=extra_where, conflict=conflict)


def _finest(kind: str) -> int:
    return min(g for f in families(kind) for g in f.grains)


def _bases() -> list[tuple[str, sql.Composable]]:
    """`ins` aggregated once per kind, at that kind's finest grain, by every dimension."""
    dims = _prefixed([sql.Identifier(c) for c in DIMENSIONS.values()])
    agg = sql.SQL("""SELECT time_bucket({w}::interval, time) AS bucket, is_bot{dims},
            {partials}
        FROM ins GROUP BY 1, 2{dims}""").format(w=sql.Literal(f"{_finest('agg')} seconds"), dims=dims,
                                                partials=sql.SQL(", ".join(f"{c.raw} AS {c.name}"
                                                                           for c in AGG_PARTIALS)))
    # dur: by the dimensions of the dur families only (page): a histogram row per distinct
    # duration, so every other dimension would multiply its rows.
    ddims = _prefixed([sql.Identifier(c) for c in dict.fromkeys(c for f in families("dur") for c in f.columns)])
    dur = sql.SQL("""SELECT time_bucket({w}::interval, time) AS bucket, is_bot{dims}, duration, count(*) AS n
        FROM ins WHERE duration IS NOT NULL GROUP BY 1, 2{dims}, duration""").format(
        w=sql.Literal(f"{_finest('dur')} seconds"), dims=ddims)
    return [(AGG_BASE, agg), (DUR_BASE, dur)]


@cache
def _ingest_statements() -> tuple:
    out: list = list(_bases())
    for kind, base in (("agg", AGG_BASE), ("dur", DUR_BASE)):
        for fam in families(kind):
            for g in fam.grains:
                out.append(agg_upsert(fam, g, base))
    for subj in SUBJECTS:  # sessions, then visitors
        out.append(upsert_state_sql(new_entries_from("ins", subj), replace=False, filtered=True, subj=subj))
    return tuple(out)


def ingest_statements() -> list:
    """What folds the just-inserted rows (`ins`) into every rollup: the pre-aggregated bases
    ((name, query) pairs) and the data-modifying CTE bodies that read them."""
    return list(_ingest_statements())
