"""Schema bootstrap: run at startup, idempotent, safe with several workers at once.

The events table is a hypertable partitioned on `time`. Everything derived from the user agent
(os, browser, device, is_bot) and the referrer host is computed once at write time, so readers
never classify strings.

The schema is made by Alembic revisions (package `migrations`): startup upgrades to head under
an advisory lock. A worker that finds the schema at head (one catalog lookup and one row of the
version table) runs no DDL: `CREATE INDEX IF NOT EXISTS` and `CREATE OR REPLACE TRIGGER` lock
their tables even when there is nothing to do, so running them on every start paused writes on
each worker start, and a worker started while anything held a lock on events waited for it,
answering 503 meanwhile.

`events_ddl()` (and `rollups.rollup_ddl()`) describe what this version of the code expects;
the baseline revision froze their output, and a test checks that the revisions still produce it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import psycopg
from alembic.util import CommandError
from psycopg import sql

from . import migrations
from .config import Settings
from .db import quote_ident

log = logging.getLogger("analytics.schema")


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
            is_bot        boolean     NOT NULL DEFAULT false,
            visitor_id    bigint,
            name          text        NOT NULL DEFAULT 'pageview',
            props         jsonb,
            hostname      text        NOT NULL DEFAULT '',
            utm_source    text        NOT NULL DEFAULT '',
            utm_medium    text        NOT NULL DEFAULT '',
            utm_campaign  text        NOT NULL DEFAULT '',
            country       text        NOT NULL DEFAULT ''
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


def current_ddl(schema: str, chunk_interval: str) -> list[sql.Composable]:
    """Everything the code of this version expects, rendered from the Python helpers: what
    the migrations in `migrations/versions` must produce (tests/test_migrations.py compares the
    two catalogs). Startup does not run it: it runs the migrations."""
    from .auth.keys import api_keys_ddl
    from .importer.ddl import import_ddl
    from .privacy.salts import salts_ddl
    from .retention import retention_ddl
    from .rollups import rollup_ddl

    return (events_ddl(schema, chunk_interval) + rollup_ddl(schema) + api_keys_ddl(schema)
            + salts_ddl(schema) + retention_ddl(schema) + import_ddl(schema))


async def bootstrap(conn: psycopg.AsyncConnection, settings: Settings) -> DatabaseInfo:
    """Bring the schema to the migrations' head, or do nothing when it is there already."""
    head = await asyncio.to_thread(migrations.heads)  # reads the revision files once per process
    await conn.set_autocommit(False)
    async with conn.transaction():
        if await migrations.at_head(conn, settings.db_schema, head):
            return await detect_edition(conn)
    # Alembic is synchronous: its own connection, in a thread, under the advisory lock (a
    # worker that waited for it finds the schema at head and runs nothing).
    await asyncio.to_thread(migrations.upgrade, settings)
    async with conn.transaction():
        return await detect_edition(conn)


async def bootstrap_with_retry(settings: Settings, *, max_delay: float = 10.0) -> DatabaseInfo:
    """Retry with capped exponential backoff until the database answers."""
    attempt, delay = 0, 0.5
    while True:
        attempt += 1
        try:
            async with await psycopg.AsyncConnection.connect(
                    str(settings.database_url), connect_timeout=max(1, int(settings.db_timeout))) as conn:
                info = await bootstrap(conn, settings)
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
        except CommandError as exc:
            # Alembic's own refusal, e.g. the database is at a revision this version does not
            # know (a newer version migrated it): serving on an unknown schema is not safe.
            log.error("schema migration refused (attempt %d), retrying in %.1fs: %s",
                      attempt, delay, _first_line(exc))
        await asyncio.sleep(delay)
        delay = min(max_delay, delay * 2)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
