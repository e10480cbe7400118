"""The group-commit writer in-process, on the real database with the rollups installed: data that
validation did not stop is isolated (the others of its commit are stored, the offender named),
and the circuit opens only when the database cannot be reached, never on a data error, a lock
wait or a statement timeout. Records here bypass validation on purpose.

Multi-byte strings are random (incompressible): PostgreSQL compresses a repetitive value inside
an index row, so "aaaa" would never reach the row limit."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import AsyncIterator

import psycopg
import pytest
from psycopg import errors as E
from psycopg_pool import PoolTimeout

from analytics.config import Secret, Settings
from analytics.db import DatabaseUnavailable, make_pool
from analytics.ingestion import dberrors, repository
from analytics.ingestion.pipeline import EventRecord
from analytics.ingestion.schemas import (INDEX_ROW_MAX_BYTES, MAX_KEY_BYTES, MAX_PAGE_BYTES,
                                         MAX_SESSION_ID)
from analytics.ingestion.writer import EventRejected, EventWriter
from analytics.rollups.maintain import ingest_statements
from analytics.schema import bootstrap
from support import drop_schema, free_port, new_schema_name

BOUND_S = 30  # every wait below is bounded; generous, not a timing assertion
_rng = random.Random(4)


def cjk_bytes(n: int) -> str:
    """Random CJK text of exactly n bytes in UTF-8 (ASCII padding)."""
    n3, rest = divmod(n, 3)
    return "".join(chr(_rng.randint(0x4E00, 0x9FFF)) for _ in range(n3)) + "x" * rest


def emoji(n: int) -> str:
    return "".join(chr(_rng.randint(0x1F300, 0x1F5FF)) for _ in range(n))


def rec(page: str = "/w", host: str = "", browser: str = "Other", os_: str = "Other",
        device: str = "other", session: str | None = None) -> EventRecord:
    return EventRecord(uuid.uuid4(), datetime.now(timezone.utc), page, "", "", "", host, session, 0,
                       "", os_, browser, device, False)


@pytest.fixture()
def rschema(db_url):
    """A schema with the events table and every rollup, and the rollup hook registered."""
    name = new_schema_name("isolate")
    settings = Settings(database_url=Secret(db_url), db_schema=name)

    async def setup():
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await bootstrap(conn, settings)

    asyncio.run(setup())
    repository.register_insert_hook(ingest_statements)
    yield settings
    repository.unregister_insert_hook(ingest_statements)
    drop_schema(db_url, name)


@asynccontextmanager
async def running_writer(settings: Settings, pool_kwargs: dict | None = None, **kw
                         ) -> AsyncIterator[EventWriter]:
    pool = make_pool(settings)
    pool.kwargs.update(pool_kwargs or {})
    await pool.open(wait=False)
    writer = EventWriter(pool, **kw)
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        await pool.close()


async def _conn(settings: Settings) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(str(settings.database_url), autocommit=True)
    await conn.execute("SELECT set_config('search_path', %s, false)", (f"{settings.db_schema}, public",))
    return conn


async def _stored(settings: Settings, records) -> int:
    conn = await _conn(settings)
    try:
        cur = await conn.execute("SELECT count(*) FROM events WHERE id = ANY(%s)", ([r.id for r in records],))
        return (await cur.fetchone())[0]
    finally:
        await conn.close()


async def _wait_for_lock_wait(settings: Settings, blocker_pid: int) -> None:
    conn = await _conn(settings)
    try:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            cur = await conn.execute("SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                     (blocker_pid,))
            if await cur.fetchone():
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the writer never waited on the lock")


# -- the binary COPY ----------------------------------------------------------------------------

def test_copy_types_are_the_events_table_column_types(rschema):
    """A binary COPY has no casts: each field must go in its column's own type."""
    async def main():
        conn = await _conn(rschema)
        try:
            cur = await conn.execute(
                "SELECT a.attname, a.atttypid::int FROM pg_attribute a WHERE a.attrelid = 'events'::regclass "
                "AND a.attnum > 0 AND NOT a.attisdropped")
            table = dict(await cur.fetchall())
            cur = await conn.execute("SELECT t::regtype::oid::int FROM unnest(%s::text[]) t",
                                     (list(repository.COLUMN_TYPES.values()),))
            ours = dict(zip(repository.COLUMN_TYPES, [r[0] for r in await cur.fetchall()]))
        finally:
            await conn.close()
        return table, ours

    table, ours = asyncio.run(main())
    assert ours == {c: table[c] for c in ours}


def test_every_field_round_trips_through_both_copy_paths(rschema):
    """Every column set (multi-byte text, props, a stored IP, a negative visitor id, a bot),
    stored by the fast path (COPY) and, sent again with a new event, by the slow path (staging
    COPY, INSERT ... ON CONFLICT): what is read back is what was sent."""
    t = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    full = EventRecord(uuid.uuid4(), t, "/ü/页面", "2001:db8::1", "Mozilla/5.0 ☃", "https://ex.com/a",
                       "ex.com", "sess-é", 86_400, "tab\there\nnewline \\ back", "iOS", "Mobile Safari",
                       "mobile", True, -(2 ** 63), "signup", '{"plan": "pro", "n": 3, "ok": true, "x": "\u00e9"}',
                       "shop.example", "news", "email", "spring", "DE")
    second = full._replace(id=uuid.uuid4(), props=None, ip_address=None, visitor_id=None,
                           session_id=None, description=None, duration=None)

    async def main():
        conn = await _conn(rschema)
        await conn.set_autocommit(False)
        try:
            async with conn.transaction():
                first_new = await repository.insert_events(conn, [full])
            async with conn.transaction():  # `full` again: the slow path
                again_new = await repository.insert_events(conn, [full, second])
            cols = ", ".join(EventRecord._fields)
            cur = await conn.execute(f"SELECT {cols} FROM events WHERE id = ANY(%s) ORDER BY is_bot DESC, "
                                     "props IS NULL", ([full.id, second.id],))
            rows = await cur.fetchall()
        finally:
            await conn.close()
        return first_new, again_new, rows

    first_new, again_new, rows = asyncio.run(main())
    assert first_new == {(full.id, t)} and again_new == {(second.id, t)}
    assert len(rows) == 2
    for sent, got in zip((full, second), rows):
        got = dict(zip(EventRecord._fields, got))
        want = sent._asdict()
        want["props"] = None if sent.props is None else json.loads(sent.props)
        assert got == want


def test_props_follow_the_connection_encoding_as_text_columns_do(rschema):
    """A connection set to another client encoding (PGCLIENTENCODING, a role's default): props
    arrive as sent, like the text columns (the server reads jsonb's text in that encoding)."""
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    rec = EventRecord(uuid.uuid4(), t, "/café", None, "ua", "", "", None, None, None, "Other", "Other",
                      "other", False, None, "signup", '{"k": "é", "ç": "ü"}', "", "", "", "", "")

    async def main():
        conn = await _conn(rschema)
        await conn.execute("SET client_encoding TO 'LATIN1'")
        await conn.set_autocommit(False)
        try:
            async with conn.transaction():
                await repository.insert_events(conn, [rec])
            cur = await conn.execute("SELECT page, props::text FROM events WHERE id = %s", (rec.id,))
            return await cur.fetchone()
        finally:
            await conn.close()

    page, props = asyncio.run(main())
    assert page == "/café" and json.loads(props) == {"k": "é", "ç": "ü"}


def test_every_integer_the_write_path_makes_fits_its_column():
    """The binary COPY sends integers in their column's width with no range check: a value past
    it would be stored wrapped, not refused (the text COPY let the database refuse it)."""
    from analytics.ingestion.schemas import MAX_DURATION_S
    from analytics.privacy.visitor import visitor_hash

    assert repository.COLUMN_TYPES["duration"] == "int4" and 0 < MAX_DURATION_S < 2 ** 31
    assert repository.COLUMN_TYPES["visitor_id"] == "int8"
    ids = [visitor_hash(bytes([i]) * 16, f"203.0.113.{i}", "ua", "") for i in range(256)]
    assert all(-(2 ** 63) <= v < 2 ** 63 for v in ids) and min(ids) < 0 < max(ids)


# -- the byte budget, on the database itself ----------------------------------------------------

def test_caps_fit_every_index_at_their_worst_and_the_limit_is_real(rschema):
    """Every indexed text at its cap at once (page and referrer host at MAX_KEY_BYTES together,
    the longest browser, os and device words, the longest session id) is stored with every rollup;
    and the database does refuse incompressible text not far beyond the caps."""
    async def main():
        conn = await _conn(rschema)
        await conn.set_autocommit(False)
        worst = [rec(cjk_bytes(MAX_PAGE_BYTES), host=cjk_bytes(MAX_KEY_BYTES - MAX_PAGE_BYTES),
                     browser=emoji(64), os_="ChromeOS", device="desktop", session=emoji(MAX_SESSION_ID)),
                 rec(cjk_bytes(1), host=cjk_bytes(MAX_KEY_BYTES - 1), browser=emoji(64),
                     os_="ChromeOS", device="desktop", session=emoji(MAX_SESSION_ID))]
        async with conn.transaction():
            new = await repository.insert_events(conn, worst)
        refused = []
        for r in (rec(cjk_bytes(INDEX_ROW_MAX_BYTES)), rec("/", host=cjk_bytes(INDEX_ROW_MAX_BYTES))):
            try:
                async with conn.transaction():
                    await repository.insert_events(conn, [r])
            except psycopg.Error as exc:
                refused.append(exc.sqlstate)
        await conn.close()
        return new, refused

    new, refused = asyncio.run(main())
    assert len(new) == 2
    assert refused == ["54000", "54000"]


# -- data errors in a shared commit -------------------------------------------------------------

def test_index_row_too_big_is_isolated_and_the_circuit_stays_closed(rschema):
    async def main():
        good = [rec(f"/good/{i}") for i in range(4)]
        bad_page = rec(cjk_bytes(3000))  # over the events (page, time) index row
        batch = [rec("/b/0"), rec("/b/1"), rec("/", host=cjk_bytes(3000)), rec("/b/3")]
        async with running_writer(rschema, wait_ms=300) as writer:  # one flush for them all
            results = await asyncio.wait_for(asyncio.gather(
                writer.submit([good[0]]), writer.submit([good[1]]), writer.submit([bad_page]),
                writer.submit(batch), writer.submit([good[2]]), writer.submit([good[3]]),
                return_exceptions=True), BOUND_S)
            available = writer.available
            stats = writer.stats_dict()
            after = await asyncio.wait_for(writer.submit([rec("/after")]), BOUND_S)
        return (results, available, stats, after, await _stored(rschema, good),
                await _stored(rschema, [bad_page]), await _stored(rschema, batch))

    results, available, stats, after, n_good, n_bad, n_batch = asyncio.run(main())
    assert [results[i] for i in (0, 1, 4, 5)] == [[True]] * 4
    bad, in_batch = results[2], results[3]
    assert isinstance(bad, EventRejected) and [i[:2] for i in bad.items] == [(0, "page")]
    assert isinstance(in_batch, EventRejected) and [i[:2] for i in in_batch.items] == [(2, "referrer")]
    for exc in (bad, in_batch):  # our words, not the database's
        assert "btree" not in exc.items[0][2] and "_pkey" not in exc.items[0][2]
    assert available and stats["available"]
    assert stats["splits"] >= 1 and stats["rejected"] == 5
    assert after == [True]
    assert (n_good, n_bad, n_batch) == (4, 0, 0)  # a batch is all or nothing


def test_several_bad_items_of_a_batch_are_all_named(rschema):
    async def main():
        items = [rec(f"/m/{i}") for i in range(40)]
        for i in (3, 17, 38):
            items[i] = rec(cjk_bytes(2800 + i))
        async with running_writer(rschema, wait_ms=0) as writer:
            try:
                await asyncio.wait_for(writer.submit(items), BOUND_S)
            except EventRejected as exc:
                return [i[:2] for i in exc.items], writer.available
        return None, None

    named, available = asyncio.run(main())
    assert named == [(3, "page"), (17, "page"), (38, "page")]
    assert available


# -- the circuit opens only when the database cannot be reached ---------------------------------

def test_lock_wait_past_the_deadline_is_503_without_opening_the_circuit(rschema):
    async def main():
        async with running_writer(rschema, wait_ms=0, timeout_s=1.0, probe_interval_s=0.1) as writer:
            blocker = await _conn(rschema)
            await blocker.set_autocommit(False)
            await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            with pytest.raises(DatabaseUnavailable):
                await asyncio.wait_for(writer.submit([rec()]), BOUND_S)
            # The writer asks a fresh connection whether the database is reachable: it is.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and writer.available:
                await asyncio.sleep(0.1)
            available = writer.available
            await blocker.rollback()
            await blocker.close()
            after = await asyncio.wait_for(writer.submit([rec()]), BOUND_S)
            return available, after

    available, after = asyncio.run(main())
    assert available, "a lock wait opened the circuit"
    assert after == [True]


@pytest.mark.parametrize("error", ["lock_timeout", "statement_timeout"])
def test_lock_timeout_and_statement_timeout_are_503_without_opening_the_circuit(rschema, error):
    settings, pool_kwargs = rschema, {}
    if error == "lock_timeout":
        pool_kwargs = {"options": "-c lock_timeout=200"}
    else:
        settings = dataclasses.replace(rschema, db_statement_timeout_ms=200)

    async def main():
        async with running_writer(settings, pool_kwargs=pool_kwargs, wait_ms=0, timeout_s=10) as writer:
            blocker = await _conn(rschema)
            await blocker.set_autocommit(False)
            await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            with pytest.raises(DatabaseUnavailable) as caught:
                await asyncio.wait_for(writer.submit([rec()]), BOUND_S)
            available = writer.available
            await blocker.rollback()
            await blocker.close()
            return caught.value.__cause__, available

    cause, available = asyncio.run(main())
    assert isinstance(cause, (E.LockNotAvailable, E.QueryCanceled)), cause
    assert available, f"a {error} opened the circuit"


def test_unreachable_database_opens_the_circuit(db_url):
    settings = Settings(database_url=Secret(f"postgresql://postgres@127.0.0.1:{free_port()}/none"),
                        db_schema="nowhere", db_timeout=1.0)

    async def main():
        async with running_writer(settings, wait_ms=0, timeout_s=5) as writer:
            with pytest.raises(DatabaseUnavailable):
                await asyncio.wait_for(writer.submit([rec()]), BOUND_S)
            first = writer.available
            with pytest.raises(DatabaseUnavailable):  # refused at once now
                await asyncio.wait_for(writer.submit([rec()]), 1)
            return first

    assert asyncio.run(main()) is False


@pytest.mark.parametrize("exc, kind", [
    (E.ProgramLimitExceeded("index row size"), dberrors.DATA),
    (E.StringDataRightTruncation(), dberrors.DATA),
    (E.CharacterNotInRepertoire(), dberrors.DATA),
    (E.CheckViolation(), dberrors.DATA),
    (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), dberrors.DATA),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), dberrors.DATA),
    (OverflowError("int too big to convert"), dberrors.DATA),  # psycopg's int8 dumper, past 2**63
    (E.DeadlockDetected(), dberrors.RETRY),
    (E.SerializationFailure(), dberrors.RETRY),
    (E.QueryCanceled(), dberrors.BUSY),
    (E.LockNotAvailable(), dberrors.BUSY),
    (E.OutOfMemory(), dberrors.BUSY),
    (E.ConnectionFailure(), dberrors.DOWN),
    (E.AdminShutdown(), dberrors.DOWN),
    (E.TooManyConnections(), dberrors.DOWN),
    (psycopg.OperationalError("consuming input failed: server closed the connection"), dberrors.DOWN),
    (PoolTimeout("couldn't get a connection"), dberrors.DOWN),
    (ConnectionRefusedError(), dberrors.DOWN),
    (TimeoutError(), dberrors.STALLED),
])
def test_failure_kinds(exc, kind):
    assert dberrors.failure_kind(exc) == kind
