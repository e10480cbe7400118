"""Connection pool and database availability.

Two psycopg 3 async pools per worker process: the event writer's (DB_WRITE_POOL_SIZE, the
write statement timeout) and the reads' (DB_READ_POOL_SIZE, READ_STATEMENT_TIMEOUT_MS). Reads
cannot take the writer's connections, so however many expensive reads are running, events are
still written; and a read that waits too long for a connection is that read's 503 (ReadsBusy),
never something the writer's circuit breaker sees. Read endpoints borrow a connection per request.
"""
from __future__ import annotations

import contextvars
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .config import Settings

log = logging.getLogger("analytics.db")


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier, for places that take text rather than sql.Identifier."""
    return '"' + name.replace('"', '""') + '"'


class DatabaseUnavailable(Exception):
    """The database cannot be reached right now; the HTTP layer turns this into a 503."""


class CommitOutcomeUnknown(DatabaseUnavailable):
    """A write not committed within the writer's deadline (WRITE_TIMEOUT_SECONDS): the database
    is slow, busy or hanging, and the events may still be committed. A DatabaseUnavailable for
    every caller that treats both alike; the HTTP answer tells them apart (overload is not an
    outage)."""


class ReadsBusy(Exception):
    """Too many reads at once (the read pool is exhausted, or the cap on raw scans is reached):
    a 503 with Retry-After for this read only."""

    def __init__(self, detail: str = "Too many reads are running; retry shortly.") -> None:
        super().__init__(detail)
        self.detail = detail


# Reads lend a connection that came back healthy within this many seconds without the
# pool's check (a round trip, a tenth of a short dashboard answer). A database outage lasts
# longer than this, so after one the connections are checked and replaced again; a read on a
# connection broken in the meantime fails like any read during an outage (503). Writes always
# check: the group-commit writer should not fail a batch on a stale connection.
_READ_FRESH_S = 1.0
# Every connection that writes or reads events speaks UTF-8 (make_pool, the importer).
CLIENT_ENCODING = "UTF8"
_reading: contextvars.ContextVar[bool] = contextvars.ContextVar("analytics_reading", default=False)


async def _check(conn: psycopg.AsyncConnection) -> None:
    if _reading.get() and time.monotonic() - getattr(conn, "_analytics_ok_at", -1e9) < _READ_FRESH_S:
        return
    await AsyncConnectionPool.check_connection(conn)


async def _returned(conn: psycopg.AsyncConnection) -> None:
    """Pool reset hook: note when a connection last came back idle and usable."""
    if conn.pgconn.status == psycopg.pq.ConnStatus.OK and \
            conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        conn._analytics_ok_at = time.monotonic()  # type: ignore[attr-defined]


def make_pool(settings: Settings, *, min_size: int = 1, max_size: int | None = None,
              name: str = "analytics", statement_timeout_ms: int | None = None,
              url: str | None = None, timeout: float | None = None) -> AsyncConnectionPool:
    """`url`: another server than DATABASE_URL (a read replica); `timeout`: how long a checkout
    waits (default DB_TIMEOUT)."""
    timeout_ms = settings.db_statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms

    async def configure(conn: psycopg.AsyncConnection) -> None:
        # Session settings applied to every new connection.
        await conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
        # Every statement here is short; JIT compilation (50-200 ms once a plan looks costly)
        # only ever made dashboard reads slower.
        await conn.execute("SET jit = off")
        # float8 as text in shortest round-trip form, as Python's repr writes it (the seed
        # endpoint's JSON is rendered by PostgreSQL); 1 is PostgreSQL's default since 12.
        await conn.execute("SET extra_float_digits = 1")
        await conn.execute("SELECT set_config('search_path', %s, false)",
                           (f"{quote_ident(settings.db_schema)}, public",))
        await conn.commit()

    return AsyncConnectionPool(
        url or str(settings.database_url),
        min_size=min_size,
        max_size=max(min_size, max_size or settings.db_pool_size),
        timeout=settings.db_timeout if timeout is None else timeout,
        open=False,
        name=name,
        configure=configure,
        # Validate on checkout so that a pool survives a database restart without a restart
        # of its own: broken connections are discarded and replaced.
        check=_check,
        reset=_returned,
        kwargs={"autocommit": False, "connect_timeout": max(1, int(settings.db_timeout)),
                # UTF-8 whatever PGCLIENTENCODING or a role's default says: what clients send
                # is Unicode, and a narrower encoding would refuse valid events and fail reads.
                "client_encoding": CLIENT_ENCODING,
                # analytics-api, or analytics-api-writer / -reader (pg_stat_activity tells them apart)
                "application_name": "analytics-api" + ("" if name == "analytics" else f"-{name}")},
        reconnect_timeout=0,  # never give up reconnecting in the background
    )


def refused_as_too_complex(exc: BaseException) -> bool:
    """SQLSTATE class 54 (program limit exceeded: too many columns, statement too complex): the
    database refuses the statement itself. psycopg raises these as OperationalError subclasses,
    the class of outages, so they are told apart by their state."""
    return (getattr(exc, "sqlstate", None) or "").startswith("54")


@asynccontextmanager
async def connection(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """Borrow a connection for a read, mapping 'cannot reach the database' to DatabaseUnavailable."""
    token = _reading.set(True)
    try:
        async with pool.connection() as conn:
            _reading.reset(token)
            token = None
            yield conn
    except psycopg.errors.QueryCanceled:
        raise  # up, but the statement took too long: the HTTP layer says so (not an outage)
    except PoolTimeout as exc:
        if _saturated(pool):
            # Every connection is lent to another read: this one waits its turn no longer.
            raise ReadsBusy() from exc
        log.warning("database unavailable: %s", type(exc).__name__)
        raise DatabaseUnavailable() from exc
    except psycopg.OperationalError as exc:
        if refused_as_too_complex(exc):
            raise  # the question's fault, not an outage (nor a reason to eject a replica)
        log.warning("database unavailable: %s", type(exc).__name__)
        raise DatabaseUnavailable() from exc
    finally:
        if token is not None:
            _reading.reset(token)


def _saturated(pool: AsyncConnectionPool) -> bool:
    """The pool holds all the connections it may and none is free (busy, not unreachable)."""
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= pool.max_size and stats.get("pool_available", 0) == 0


def make_pools(settings: Settings) -> tuple[AsyncConnectionPool, AsyncConnectionPool]:
    """(write pool, read pool). The writer's connections are opened up front: it should never
    wait for a connection to be made while events queue."""
    size = max(settings.db_write_pool_size, settings.write_max_inflight + 1)  # the flushes + the probe
    write = make_pool(settings, min_size=size, max_size=size, name="writer")
    read = make_pool(settings, max_size=settings.db_read_pool_size, name="reader",
                     statement_timeout_ms=settings.read_statement_timeout_ms)
    return write, read
