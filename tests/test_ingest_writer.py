"""The group-commit writer and the repository in-process, on the real database: insert hooks on the
fast (COPY) and slow (ON CONFLICT) paths, a real deadlock retried, one request's bad data not
failing the others that shared its COMMIT, and a bounded wait when the database blocks."""
from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from analytics.config import Secret, Settings
from analytics.db import CommitOutcomeUnknown, DatabaseUnavailable, make_pool
from analytics.ingestion import repository
from analytics.ingestion.pipeline import EventRecord
from analytics.ingestion.writer import EventRejected, EventWriter, WriterOverloaded
from analytics.schema import bootstrap
from support import drop_schema, new_schema_name

BOUND_S = 30  # every wait below is bounded; generous, not a timing assertion


def rec(page: str = "/w", id_: uuid.UUID | None = None, t: datetime | None = None) -> EventRecord:
    return EventRecord(id_ or uuid.uuid4(), t or datetime.now(timezone.utc), page, "", "", "", "",
                       None, 0, "", "Other", "Other", "other", False)


@pytest.fixture()
def wschema(db_url):
    """A schema with the events table and a `counters` table that the test hook updates."""
    name = new_schema_name("writer")
    settings = Settings(database_url=Secret(db_url), db_schema=name)

    async def setup():
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await bootstrap(conn, settings)
            await conn.execute(sql.SQL(
                "CREATE TABLE {}.counters (k text PRIMARY KEY, n int NOT NULL)").format(sql.Identifier(name)))
            await conn.execute(sql.SQL("INSERT INTO {}.counters VALUES ('a', 0)").format(sql.Identifier(name)))
            await conn.execute(sql.SQL("INSERT INTO {}.counters VALUES ('b', 0)").format(sql.Identifier(name)))
            await conn.commit()

    asyncio.run(setup())
    yield settings
    drop_schema(db_url, name)


def _count_hook() -> list[sql.Composable]:
    # Adds the number of inserted rows to both counters; locks row a, then row b.
    return [sql.SQL("UPDATE counters SET n = n + (SELECT count(*) FROM ins) WHERE k IN ('a', 'b') "
                    "RETURNING k")]


@pytest.fixture()
def count_hook():
    repository.register_insert_hook(_count_hook)
    yield
    repository.unregister_insert_hook(_count_hook)


async def _conn(settings: Settings) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(str(settings.database_url), autocommit=True)
    await conn.execute("SELECT set_config('search_path', %s, false)", (f"{settings.db_schema}, public",))
    return conn


@asynccontextmanager
async def running_writer(settings: Settings, **kw) -> AsyncIterator[EventWriter]:
    pool = make_pool(settings)
    await pool.open(wait=True, timeout=BOUND_S)
    writer = EventWriter(pool, **kw)
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        await pool.close()


@asynccontextmanager
async def in_transaction(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection with an open transaction (rolled back at the end unless committed)."""
    conn = await _conn(settings)
    await conn.set_autocommit(False)
    try:
        yield conn
    finally:
        await conn.close()


async def _fetch(conn, query: str, params=()):
    return await (await conn.execute(query, params)).fetchall()


async def _wait_until_blocked_by(settings: Settings, blocker_pid: int) -> None:
    """Until another backend waits for a lock that `blocker_pid` holds. (Its own autocommit
    connection: pg_stat_activity is a snapshot taken once per transaction.)"""
    conn = await _conn(settings)
    try:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            rows = await _fetch(conn, "SELECT pid FROM pg_stat_activity "
                                      "WHERE %s = ANY(pg_blocking_pids(pid))", (blocker_pid,))
            if rows:
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the writer never waited on the lock")


def test_hooks_run_once_per_new_row_on_both_paths(wschema, count_hook):
    async def main():
        conn = await _conn(wschema)
        await conn.set_autocommit(False)
        a, b = rec(), rec()
        async with conn.transaction():  # fast path, with a duplicate inside the batch
            assert await repository.insert_events(conn, [a, b, a]) == {(a.id, a.time), (b.id, b.time)}
        c = rec()
        async with conn.transaction():  # slow path: a and b are stored already
            assert await repository.insert_events(conn, [a, c, b, c]) == {(c.id, c.time)}
            # A second write in the same transaction starts from an empty staging table.
            d = rec()
            assert await repository.insert_events(conn, [d]) == {(d.id, d.time)}
        counters = dict(await _fetch(conn, "SELECT k, n FROM counters"))
        events = (await _fetch(conn, "SELECT count(*) FROM events"))[0][0]
        await conn.close()
        return counters, events

    counters, events = asyncio.run(main())
    assert events == 4
    assert counters == {"a": 4, "b": 4}


def test_deadlock_is_retried_and_written_once(wschema, count_hook):
    async def main():
        async with running_writer(wschema, wait_ms=0, retries=3) as writer, \
                in_transaction(wschema) as other:
            (timeout_s,) = (await _fetch(
                other, "SELECT extract(epoch FROM current_setting('deadlock_timeout')::interval)"))[0]
            assert timeout_s < 10, "the cluster's deadlock_timeout is too long for this test"
            # The other transaction waits long before it looks for deadlocks: the writer's
            # backend finds it first and is the one rolled back.
            await other.execute("SET LOCAL deadlock_timeout = '60s'")
            await other.execute("UPDATE counters SET n = n + 100 WHERE k = 'b'")
            r = rec()
            task = asyncio.create_task(writer.submit([r]))
            # The writer's hook has locked a and waits for b ...
            await _wait_until_blocked_by(wschema, other.info.backend_pid)
            # ... and now we wait for a: a deadlock.
            await other.execute("UPDATE counters SET n = n + 100 WHERE k = 'a'")
            await other.commit()
            result = await asyncio.wait_for(task, BOUND_S)
            await other.set_autocommit(True)
            counters = dict(await _fetch(other, "SELECT k, n FROM counters"))
            stored = (await _fetch(other, "SELECT count(*) FROM events WHERE id = %s", (r.id,)))[0][0]
            return result, writer.stats.retries, counters, stored

    result, retries, counters, stored = asyncio.run(main())
    assert result == [True]
    assert retries >= 1
    assert stored == 1
    assert counters == {"a": 101, "b": 101}  # the hook applied once, after the retry


def test_bad_request_does_not_fail_the_others_in_its_flush(wschema):
    async def main():
        good, bad = rec("/good"), rec("/bad\x00")  # PostgreSQL text cannot hold NUL
        async with running_writer(wschema, wait_ms=200) as writer:  # both in one flush
            results = await asyncio.wait_for(asyncio.gather(
                writer.submit([good]), writer.submit([bad]), return_exceptions=True), BOUND_S)
            conn = await _conn(wschema)
            stored = (await _fetch(conn, "SELECT count(*) FROM events WHERE id = %s", (good.id,)))[0][0]
            await conn.close()
            return results, writer.stats.splits, stored

    (ok, err), splits, stored = asyncio.run(main())
    assert ok == [True]
    assert isinstance(err, EventRejected)  # answered 422 naming the field, not a 500
    assert err.items[0][:2] == (0, "page")
    assert splits == 1
    assert stored == 1


def test_blocked_database_gives_a_bounded_wait_then_recovers(wschema):
    async def main():
        async with running_writer(wschema, wait_ms=0, timeout_s=1.0, probe_interval_s=0.1) as writer, \
                in_transaction(wschema) as blocker:
            await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            t0 = time.monotonic()
            # Past its deadline: the outcome is unknown (a late commit, not a refused connection).
            with pytest.raises(CommitOutcomeUnknown):
                await asyncio.wait_for(writer.submit([rec()]), BOUND_S)
            waited = time.monotonic() - t0
            await blocker.rollback()
            # The writer writes again by itself once the database answers.
            deadline = time.monotonic() + BOUND_S
            while True:
                try:
                    result = await writer.submit([rec()])
                    break
                except DatabaseUnavailable:
                    assert time.monotonic() < deadline, "the writer did not recover"
                    await asyncio.sleep(0.1)
            return waited, result

    waited, result = asyncio.run(main())
    assert waited < BOUND_S
    assert result == [True]


def test_queue_is_bounded_in_events(wschema):
    async def main():
        async with running_writer(wschema, wait_ms=0, batch_max=4, queue_max=10, max_inflight=1,
                                  timeout_s=20) as writer, in_transaction(wschema) as blocker:
            await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            first = asyncio.create_task(writer.submit([rec()]))  # in flight, blocked
            await _wait_until_blocked_by(wschema, blocker.info.backend_pid)
            # The collector takes the next request and waits for a flush slot (its events still
            # count: not taken into a flush yet) ...
            queued = [asyncio.create_task(writer.submit([rec() for _ in range(4)]))]
            await asyncio.sleep(0.1)
            assert writer.queue_depth == 4
            # ... and one more waits in the queue.
            queued.append(asyncio.create_task(writer.submit([rec() for _ in range(4)])))
            await asyncio.sleep(0.1)
            assert writer.queue_depth == 8
            with pytest.raises(WriterOverloaded):
                await writer.submit([rec() for _ in range(3)])  # 8 + 3 > 10
            assert writer.queue_depth == 8
            await blocker.rollback()
            results = await asyncio.wait_for(asyncio.gather(first, *queued), BOUND_S)
            # A batch larger than the whole queue is still taken when the queue is empty.
            big = await asyncio.wait_for(writer.submit([rec() for _ in range(25)]), BOUND_S)
            return results, big

    results, big = asyncio.run(main())
    assert results == [[True], [True] * 4, [True] * 4]
    assert big == [True] * 25


def test_requests_queued_while_every_flush_slot_is_busy_join_one_flush(wschema):
    """The collector waits for a flush slot before it gathers a batch: requests that arrive one by
    one while every slot is busy go out together in the next flush (larger COMMITs under load,
    each paying the rollup upserts once), not the first of them alone (what gathering first, for
    `wait_ms`, and then waiting for the slot did)."""
    async def main():
        async with running_writer(wschema, wait_ms=0, batch_max=100, max_inflight=1,
                                  timeout_s=20) as writer, in_transaction(wschema) as blocker:
            await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            first = asyncio.create_task(writer.submit([rec()]))  # in flight, blocked
            await _wait_until_blocked_by(wschema, blocker.info.backend_pid)
            later = []
            for _ in range(5):  # one by one, each long after wait_ms
                later.append(asyncio.create_task(writer.submit([rec()])))
                await asyncio.sleep(0.05)
            assert writer.stats.flushes == 0
            await blocker.rollback()
            results = await asyncio.wait_for(asyncio.gather(first, *later), BOUND_S)
            return results, writer.stats.flushes, writer.stats.events, writer.queue_depth

    results, flushes, events, depth = asyncio.run(main())
    assert results == [[True]] * 6
    assert (flushes, events, depth) == (2, 6, 0)
