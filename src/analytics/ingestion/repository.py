"""Storing events: COPY into a per-connection staging table, then one idempotent INSERT.

The INSERT ... ON CONFLICT (id, time) DO NOTHING RETURNING tells which rows were new; the rest
were duplicates (already stored, or repeated inside the same batch). Callers own the
transaction: nothing here commits.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import psycopg
from psycopg import sql

from .pipeline import COLUMNS, EventRecord

_STAGE = "events_stage"

# Statements that consume the rows just inserted (a CTE named `ins`, all event columns),
# registered by other write-side maintainers (e.g. rollups) at startup.
InsertHook = Callable[[], list[sql.Composable]]
_hooks: list[InsertHook] = []


def register_insert_hook(hook: InsertHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def _cols() -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)


def _insert_statement() -> sql.Composable:
    ctes = [sql.SQL("""ins AS (
        INSERT INTO events ({cols})
        SELECT DISTINCT ON (id, time) {cols} FROM {stage} ORDER BY id, time
        ON CONFLICT (id, time) DO NOTHING
        RETURNING *)""").format(cols=_cols(), stage=sql.Identifier(_STAGE))]
    for i, hook in enumerate(_hooks):
        for j, stmt in enumerate(hook()):
            ctes.append(sql.SQL("{} AS ({})").format(sql.Identifier(f"hook_{i}_{j}"), stmt))
    return sql.SQL("WITH {} SELECT id, time FROM ins").format(sql.SQL(", ").join(ctes))


async def _ensure_stage(conn: psycopg.AsyncConnection) -> None:
    # Temp tables live as long as the connection; ON COMMIT DELETE ROWS empties it each time.
    if getattr(conn, "_analytics_stage_ready", False):
        return
    await conn.execute(sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    ).format(sql.Identifier(_STAGE)))
    conn._analytics_stage_ready = True  # type: ignore[attr-defined]


async def insert_events(conn: psycopg.AsyncConnection,
                        records: Sequence[EventRecord]) -> set[tuple]:
    """Stage and insert `records` in the caller's transaction; return the (id, time) keys stored."""
    if not records:
        return set()
    try:
        await _ensure_stage(conn)
        async with conn.cursor() as cur:
            async with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(_STAGE), _cols())) as copy:
                for r in records:
                    await copy.write_row(r)
            await cur.execute(_insert_statement())
            rows = await cur.fetchall()
    except BaseException:
        # A rolled-back transaction takes a just-created temp table with it.
        conn._analytics_stage_ready = False  # type: ignore[attr-defined]
        raise
    return {(r[0], r[1]) for r in rows}


def split_duplicates(records: Iterable[EventRecord], stored: set[tuple]) -> list[bool]:
    """For each record, True if this very record was the one stored (first occurrence)."""
    seen: set[tuple] = set()
    out = []
    for r in records:
        key = (r.id, r.time)
        out.append(key in stored and key not in seen)
        seen.add(key)
    return out
