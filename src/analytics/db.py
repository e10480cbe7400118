"""Connection pool and database availability.

One psycopg 3 async pool per worker process. Endpoints never talk to the pool directly on the
hot write path (the event writer owns that); read endpoints borrow a connection per request.
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


# Reads lend a connection that came back healthy within this many seconds without the
# pool's check (a round trip, a tenth of a short dashboard answer). A database outage lasts
# longer than this, so after one the connections are checked and replaced again; a read on a
# connection broken in the meantime fails like any read during an outage (503). Writes always
# check: the group-commit writer should not fail a batch on a stale connection.
_READ_FRESH_S = 1.0
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
              name: str = "analytics") -> AsyncConnectionPool:
    async def configure(conn: psycopg.AsyncConnection) -> None:
        # Session settings applied to every new connection.
        await conn.execute(f"SET statement_timeout = {int(settings.db_statement_timeout_ms)}")
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
        str(settings.database_url),
        min_size=min_size,
        max_size=max_size or settings.db_pool_size,
        timeout=settings.db_timeout,
        open=False,
        name=name,
        configure=configure,
        # Validate on checkout so that a pool survives a database restart without a restart
        # of its own: broken connections are discarded and replaced.
        check=_check,
        reset=_returned,
        kwargs={"autocommit": False, "connect_timeout": max(1, int(settings.db_timeout)),
                "application_name": "analytics-api"},
        reconnect_timeout=0,  # never give up reconnecting in the background
    )


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
    except (PoolTimeout, psycopg.OperationalError) as exc:
        log.warning("database unavailable: %s", type(exc).__name__)
        raise DatabaseUnavailable() from exc
    finally:
        if token is not None:
            _reading.reset(token)
