"""Schema bootstrap: run at startup, idempotent, safe with several workers at once.

The events table is a hypertable partitioned on `time`. Everything derived from the user agent
(os, browser, device, is_bot) and the referrer host is computed once at write time, so readers
never classify strings.

The DDL runs only when it changed: its SHA-256 is stored with it (table `schema_ddl`), and a
worker that finds the same digest reads nothing else. `CREATE INDEX IF NOT EXISTS` and
`CREATE OR REPLACE TRIGGER` lock their tables even when there is nothing to do, so running them
on every start paused writes on each worker start, and a worker started while anything held a
lock on events waited for it, answering 503 meanwhile.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .config import Settings
from .db import quote_ident

log = logging.getLogger("analytics.schema")

# Any fixed number; serialises bootstrap between gunicorn workers and test processes.
_BOOTSTRAP_LOCK_KEY = 4_004_004_004


@dataclass(frozen=True)
class DatabaseInfo:
    timescaledb_version: str
    license: str  # 'apache' or 'timescale'

    @property
    def community(self) -> bool:
        """Community-edition features (continuous aggregates, compression, policies)."""
        return self.license == "timescale"


def events_ddl(schema: str, chunk_interval: str, *, create_schema: bool = True) -> list[sql.Composable]:
    s = sql.Identifier(schema)
    # CREATE SCHEMA IF NOT EXISTS checks the database-level CREATE privilege before it checks
    # existence: a least-privilege user that owns an existing schema would fail on it.
    head = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s)] if create_schema else []
    return head + [
        sql.SQL("""
        CREATE TABLE IF NOT EXISTS {}.events (
            id            uuid        NOT NULL,
            time          timestamptz NOT NULL,
            page          text        NOT NULL,
            ip_address    text,
            user_agent    text,
            referrer      text,
            referrer_host text        NOT NULL DEFAULT '',
            session_id    text,
            duration      integer,
            description   text,
            os            text        NOT NULL DEFAULT 'Other',
            browser       text        NOT NULL DEFAULT 'Other',
            device        text        NOT NULL DEFAULT 'other',
            is_bot        boolean     NOT NULL DEFAULT false
        )""").format(s),
        sql.SQL("""SELECT create_hypertable({}, by_range('time', {}::interval),
                                             if_not_exists => true)""").format(
            sql.Literal(f"{quote_ident(schema)}.events"), sql.Literal(chunk_interval)),
        # Idempotency key: a unique index on a hypertable must include the time column.
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS events_id_time_key ON {}.events (id, time)").format(s),
        # Seed 004's aggregate filters on page and groups by page/os over time.
        sql.SQL("CREATE INDEX IF NOT EXISTS events_page_time_idx ON {}.events (page, time DESC)").format(s),
    ]


async def detect_edition(conn: psycopg.AsyncConnection) -> DatabaseInfo:
    cur = await conn.execute(
        "SELECT extversion, current_setting('timescaledb.license', true) "
        "FROM pg_extension WHERE extname = 'timescaledb'")
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("timescaledb extension is not installed in this database")
    return DatabaseInfo(timescaledb_version=row[0], license=(row[1] or "apache"))


DDL_TABLE = "schema_ddl"


def _ddl_table_sql(schema: str) -> list[sql.Composable]:
    t = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(DDL_TABLE))
    return [sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
                one boolean PRIMARY KEY DEFAULT true CHECK (one),
                sha256 text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""").format(t),
            sql.SQL("""INSERT INTO {} (sha256) VALUES (%(sha)s)
                ON CONFLICT (one) DO UPDATE SET sha256 = excluded.sha256, applied_at = now()""").format(t)]


async def _applied(conn: psycopg.AsyncConnection, schema: str, digest: str) -> bool:
    """Whether this exact DDL was applied (no lock on any table of ours: a catalog lookup and
    one row)."""
    name = f"{quote_ident(schema)}.{quote_ident(DDL_TABLE)}"
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    if not (await cur.fetchone())[0]:
        return False
    cur = await conn.execute(sql.SQL("SELECT sha256 FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(DDL_TABLE)))
    row = await cur.fetchone()
    return row is not None and row[0] == digest


async def bootstrap(conn: psycopg.AsyncConnection, settings: Settings,
                    extra_ddl: list[sql.Composable] | None = None) -> DatabaseInfo:
    """Create the extension, the events hypertable and its indexes, and `extra_ddl` (idempotent);
    skipped when the same DDL was applied before."""
    schema = settings.db_schema
    ddl = events_ddl(schema, settings.events_chunk_interval) + list(extra_ddl or [])
    digest = hashlib.sha256("\n;\n".join(stmt.as_string(conn) for stmt in ddl).encode()).hexdigest()
    await conn.set_autocommit(False)
    async with conn.transaction():
        if await _applied(conn, schema, digest):
            return await detect_edition(conn)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK_KEY,))
        if await _applied(conn, schema, digest):  # another worker did it while we waited
            return await detect_edition(conn)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        schema_exists = await cur.fetchone() is not None
        for stmt in events_ddl(schema, settings.events_chunk_interval, create_schema=not schema_exists):
            await conn.execute(stmt)
        for stmt in extra_ddl or []:
            await conn.execute(stmt)
        create, record = _ddl_table_sql(schema)
        await conn.execute(create)
        await conn.execute(record, {"sha": digest})
        info = await detect_edition(conn)
    return info


async def bootstrap_with_retry(settings: Settings, extra_ddl: list[sql.Composable] | None = None,
                               *, max_delay: float = 10.0) -> DatabaseInfo:
    """Retry with capped exponential backoff until the database answers."""
    attempt, delay = 0, 0.5
    while True:
        attempt += 1
        try:
            async with await psycopg.AsyncConnection.connect(
                    str(settings.database_url), connect_timeout=max(1, int(settings.db_timeout))) as conn:
                info = await bootstrap(conn, settings, extra_ddl)
            log.info("schema ready", extra={"attempt": attempt, "timescaledb": info.timescaledb_version,
                                            "license": info.license, "schema": settings.db_schema})
            return info
        except psycopg.OperationalError as exc:
            log.warning("database not reachable (attempt %d), retrying in %.1fs: %s",
                        attempt, delay, _first_line(exc))
        except psycopg.Error as exc:
            # Reachable, but the bootstrap failed (extension missing, no privilege, ...): say so
            # loudly and keep trying, rather than let the task die and serve 503s in silence.
            log.error("schema bootstrap failed (attempt %d), retrying in %.1fs: %s: %s",
                      attempt, delay, type(exc).__name__, _first_line(exc))
        await asyncio.sleep(delay)
        delay = min(max_delay, delay * 2)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
