"""Storing events: one idempotent write of a batch of rows, inside the caller's transaction.

Fast path: the rows (de-duplicated in Python) are COPYed straight into the events hypertable
inside a savepoint. COPY is about twice as fast as INSERT ... SELECT on a hypertable
(TimescaleDB buffers COPY rows per chunk; INSERT goes row by row), and nearly every batch is
all-new events.

Slow path, taken only when the fast path hits an (id, time) that is already stored (a client
retry): the savepoint is rolled back, the rows are COPYed into a per-connection temp staging
table, and one INSERT ... SELECT ... ON CONFLICT (id, time) DO NOTHING RETURNING tells which
rows were new.

The COPYs are binary, with each column's type stated: psycopg then writes a row about four
times faster than in text (a timestamptz took 5 us as text, 0.4 us binary), and a batch of 1,000
events spent a quarter of its worker time in the COPY (bench/README.md). The database parses
either form about as fast.

Insert hooks: other write-side maintainers (e.g. rollups) register data-modifying statements
that consume a CTE named `ins` holding the rows just inserted (all event columns). They run in
the same transaction: on the slow path as CTEs of the INSERT, on the fast path in one statement
over the staged copy of the rows. Callers own the transaction: nothing here commits.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence, Union

import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.copy import AsyncLibpqWriter
from psycopg.pq import Format

from .pipeline import COLUMNS, EventRecord

# The events table's type of each EventRecord field, in COLUMNS order (a binary COPY has no
# casts: every value goes in its column's own binary form). tests/test_writer_isolation.py
# compares them with the table.
COLUMN_TYPES = {
    "id": "uuid", "time": "timestamptz", "page": "text", "ip_address": "text", "user_agent": "text",
    "referrer": "text", "referrer_host": "text", "session_id": "text", "duration": "int4",
    "description": "text", "os": "text", "browser": "text", "device": "text", "is_bot": "bool",
    "visitor_id": "int8", "name": "text", "props": "jsonb", "hostname": "text",
    "utm_source": "text", "utm_medium": "text", "utm_campaign": "text", "country": "text",
}
assert tuple(COLUMN_TYPES) == COLUMNS, "a new EventRecord field needs its column type here"
_COPY_TYPES = list(COLUMN_TYPES.values())


class _JsonbTextDumper(Dumper):
    """`props` is JSON text already (ingestion/fields.py): jsonb's binary form is a version
    byte and that text. (psycopg's own jsonb dumper would serialize the text once more.)
    Registered by oid only, on the COPY's cursor: nothing else dumps with it."""

    format = Format.BINARY
    oid = 3802  # jsonb

    def __init__(self, cls: type, context=None) -> None:
        super().__init__(cls, context)
        # The server reads jsonb's text in the client encoding, as it does a text column's (which
        # psycopg's own dumper encodes so): UTF-8 unless the connection says otherwise.
        enc = self.connection.info.encoding if self.connection is not None else "utf-8"
        self._encoding = "utf-8" if enc == "ascii" else enc

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode(self._encoding)

_STAGE = "events_stage"
_RESET_AND_SAVEPOINT = f"DELETE FROM {_STAGE}; SAVEPOINT analytics_fast_copy".encode()

# Statements that consume the rows just inserted (a CTE named `ins`, all event columns),
# registered by other write-side maintainers (e.g. rollups) at startup. An item is either a
# data-modifying statement, or a (name, query) pair: an intermediate result, materialized once,
# that the hook's later statements read by that name (e.g. `ins` pre-aggregated).
HookItem = Union[sql.Composable, tuple[str, sql.Composable]]
InsertHook = Callable[[], list[HookItem]]
_hooks: list[InsertHook] = []


def register_insert_hook(hook: InsertHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def unregister_insert_hook(hook: InsertHook) -> None:
    if hook in _hooks:
        _hooks.remove(hook)


def hook_count() -> int:
    """How many insert hooks every write runs (the benchmark prints it)."""
    return len(_hooks)


def _cols() -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)


def _with_hooks(ins: sql.Composable, final: sql.Composable, *, take: bool) -> sql.Composable:
    """`staged` (the staging table's rows) -> `ins` (the rows inserted) -> the hooks -> final.
    take=True takes the rows with DELETE, emptying the staging table in the same statement;
    take=False only reads them (the fast path empties the table before it fills it)."""
    staged = "DELETE FROM {} RETURNING *" if take else "SELECT * FROM {}"
    ctes = [sql.SQL("staged AS (" + staged + ")").format(sql.Identifier(_STAGE)),
            sql.SQL("ins AS ({})").format(ins), *hook_ctes(_hooks)]
    return sql.SQL("WITH {} {}").format(sql.SQL(", ").join(ctes), final)


def hook_ctes(hooks: Sequence[InsertHook]) -> list[sql.Composable]:
    """The hooks' items as CTEs that follow one named `ins` (tests compose them after their own)."""
    ctes: list[sql.Composable] = []
    for i, hook in enumerate(hooks):
        for j, item in enumerate(hook()):
            if isinstance(item, tuple):
                name, query = item
                ctes.append(sql.SQL("{} AS MATERIALIZED ({})").format(sql.Identifier(name), query))
            else:
                ctes.append(sql.SQL("{} AS ({})").format(sql.Identifier(f"hook_{i}_{j}"), item))
    return ctes


_statements: dict[tuple, tuple[bytes, bytes]] = {}


def _statements_for_hooks(conn: psycopg.AsyncConnection) -> tuple[bytes, bytes]:
    """(slow-path insert, fast-path hooks), composed once per set of registered hooks and kept
    as bytes: rendering the composed SQL of many hook CTEs on every flush cost about 5% of a
    worker's CPU at full load."""
    key = tuple(_hooks)
    if key not in _statements:
        _statements.clear()
        _statements[key] = (_insert_statement().as_bytes(conn), _hooks_statement().as_bytes(conn))
    return _statements[key]


def _insert_statement() -> sql.Composable:
    """Slow path: insert what is not stored yet, run the hooks on it, return the new keys."""
    return _with_hooks(
        sql.SQL("""INSERT INTO events ({cols})
        SELECT {cols} FROM staged ORDER BY id, time
        ON CONFLICT (id, time) DO NOTHING
        RETURNING *""").format(cols=_cols()),
        sql.SQL("SELECT id, time FROM ins"), take=True)


def _hooks_statement() -> sql.Composable:
    """Fast path: the staged rows were all inserted; run the hooks on them."""
    return _with_hooks(sql.SQL("SELECT * FROM staged"), sql.SQL("SELECT 1"), take=False)


class _TeeWriter(AsyncLibpqWriter):
    """Sends COPY data to the server and keeps the encoded bytes, to replay them elsewhere."""

    def __init__(self, cursor: psycopg.AsyncCursor, sink: list[bytes]) -> None:
        super().__init__(cursor)
        self.sink = sink

    async def write(self, data) -> None:
        self.sink.append(bytes(data))
        await super().write(data)


async def _ensure_stage(conn: psycopg.AsyncConnection) -> None:
    # Temp tables live as long as the connection; ON COMMIT DELETE ROWS empties it each time.
    if getattr(conn, "_analytics_stage_ready", False):
        return
    await conn.execute(sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    ).format(sql.Identifier(_STAGE)))
    conn._analytics_stage_ready = True  # type: ignore[attr-defined]


def unique_rows(records: Iterable[EventRecord]) -> list[EventRecord]:
    """The first occurrence of each (id, time), in order."""
    seen: set[tuple] = set()
    out = []
    for r in records:
        key = (r.id, r.time)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


_copy_sql: dict[str, bytes] = {}


def _copy_statement(conn: psycopg.AsyncConnection, table: str) -> bytes:
    if table not in _copy_sql:
        _copy_sql[table] = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table), _cols()).as_bytes(conn)
    return _copy_sql[table]


async def _copy_rows(conn: psycopg.AsyncConnection, table: str, rows: Sequence[EventRecord],
                     sink: list[bytes] | None = None) -> None:
    async with conn.cursor() as cur:
        cur.adapters.register_dumper(None, _JsonbTextDumper)
        writer = _TeeWriter(cur, sink) if sink is not None else None
        async with cur.copy(_copy_statement(conn, table), writer=writer) as copy:
            copy.set_types(_COPY_TYPES)
            # The formatter buffers rows and hands back ~32 KB at a time: awaiting only then,
            # rather than once per row (copy.write_row), saves a coroutine per row.
            write_row = copy.formatter.write_row
            for r in rows:
                data = write_row(r)
                if data:
                    await copy.write(data)


async def _copy_bytes(conn: psycopg.AsyncConnection, table: str, chunks: list[bytes]) -> None:
    async with conn.cursor() as cur:
        async with cur.copy(_copy_statement(conn, table)) as copy:
            for chunk in chunks:
                await copy.write(chunk)


async def insert_events(conn: psycopg.AsyncConnection,
                        records: Sequence[EventRecord]) -> set[tuple]:
    """Store `records` inside the caller's open transaction (`async with conn.transaction()`);
    return the (id, time) keys that were new. Duplicates, stored before or repeated in
    `records`, are skipped."""
    if not records:
        return set()
    rows = unique_rows(records)
    hooks = bool(_hooks)
    try:
        if hooks:
            await _ensure_stage(conn)
        sink: list[bytes] | None = [] if hooks else None
        # A savepoint, so that a conflict undoes only this COPY. (Plain SQL rather than a
        # nested conn.transaction(): that composes its SAVEPOINT statements on every call.)
        # With hooks, the staging table is emptied in the same round trip: it is empty unless
        # an earlier write of this transaction left its rows (ON COMMIT DELETE ROWS empties it
        # at the end), and a DELETE here is cheaper than taking the rows with DELETE RETURNING.
        await conn.execute(_RESET_AND_SAVEPOINT if hooks else b"SAVEPOINT analytics_fast_copy")
        try:
            await _copy_rows(conn, "events", rows, sink)
        except psycopg.errors.UniqueViolation:
            await conn.execute(b"ROLLBACK TO SAVEPOINT analytics_fast_copy")
            return await _insert_slow(conn, rows)
        await conn.execute(b"RELEASE SAVEPOINT analytics_fast_copy")
        if hooks:
            assert sink is not None
            await _copy_bytes(conn, _STAGE, sink)
            await conn.execute(_statements_for_hooks(conn)[1])
        return {(r.id, r.time) for r in rows}
    except BaseException:
        # A rolled-back transaction takes a just-created temp table with it.
        conn._analytics_stage_ready = False  # type: ignore[attr-defined]
        raise


async def _insert_slow(conn: psycopg.AsyncConnection, rows: Sequence[EventRecord]) -> set[tuple]:
    await _ensure_stage(conn)
    await _copy_rows(conn, _STAGE, rows)
    async with conn.cursor() as cur:
        await cur.execute(_statements_for_hooks(conn)[0])
        stored = await cur.fetchall()
    return {(r[0], r[1]) for r in stored}


async def probe_insert(conn: psycopg.AsyncConnection, records: Sequence[EventRecord],
                       is_data_error: Callable[[BaseException], bool]) -> BaseException | None:
    """Store `records` and undo it at once (a savepoint, inside the caller's transaction): the
    data error the database gives these rows, or None if it takes them. For finding which rows
    of a refused batch are at fault; any other error is raised."""
    await _ensure_stage(conn)  # outside the savepoint, so that undoing it keeps the table
    await conn.execute(b"SAVEPOINT analytics_probe")
    error: BaseException | None = None
    try:
        await insert_events(conn, records)
    except Exception as exc:  # noqa: BLE001 - sorted below
        if not is_data_error(exc):
            raise
        error = exc
    await conn.execute(b"ROLLBACK TO SAVEPOINT analytics_probe")
    conn._analytics_stage_ready = True  # type: ignore[attr-defined]
    return error


def forget_stage(conn: psycopg.AsyncConnection) -> None:
    """After rolling back a transaction that may have created the staging table."""
    conn._analytics_stage_ready = False  # type: ignore[attr-defined]


def split_duplicates(records: Iterable[EventRecord], stored: set[tuple]) -> list[bool]:
    """For each record, True if this very record was the one stored (first occurrence)."""
    seen: set[tuple] = set()
    out = []
    for r in records:
        key = (r.id, r.time)
        out.append(key in stored and key not in seen)
        seen.add(key)
    return out
