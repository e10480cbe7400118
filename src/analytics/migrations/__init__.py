"""Schema migrations with Alembic: the revisions in `versions/` take a schema to head.

`upgrade(settings)` is what startup (schema.bootstrap), `make migrate` and the rollup rebuild
run: one transaction on its own (sync, SQLAlchemy + psycopg 3) connection that holds the
bootstrap advisory lock, creates the extension and the schema when missing, and runs every
pending revision; a second worker that waited for the lock finds nothing to do. Alembic's
version table lives in the service's schema (DB_SCHEMA), so each schema migrates on its own.

`at_head()` is the check that precedes it on every start: a catalog lookup and one row of the
version table, so a worker of an up-to-date database takes no lock on events or the rollups.

A database made before migrations (the bootstrap of old recorded its DDL's SHA-256 in
`schema_ddl`, and has no version table) is recognised: when the digest is the baseline's, the
baseline is stamped (nothing runs); otherwise the baseline runs, which is idempotent.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import psycopg
from psycopg import sql

from ..config import Settings
from ..db import quote_ident

log = logging.getLogger("analytics.migrations")


class _Quiet(logging.Filter):
    """Alembic says which implementation it picked each time it runs; keep what it applies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_Quiet())
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

PACKAGE_DIR = Path(__file__).resolve().parent
VERSIONS_DIR = PACKAGE_DIR / "versions"
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
LEGACY_TABLE = "schema_ddl"  # the pre-migration bootstrap's record of its DDL's digest
# Any fixed number; serialises migrations between gunicorn workers, servers and `make migrate`.
LOCK_KEY = 4_004_004_004


def make_config(settings: Settings | None, extra_version_dirs: Sequence[Path | str] = ()):
    """An Alembic Config without an ini file: the scripts are this package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(PACKAGE_DIR))
    cfg.set_main_option("path_separator", "os")
    dirs = [str(VERSIONS_DIR), *(str(Path(d).resolve()) for d in extra_version_dirs)]
    cfg.set_main_option("version_locations", os.pathsep.join(d.replace("%", "%%") for d in dirs))
    if settings is not None:
        cfg.attributes["settings"] = settings
        cfg.attributes["schema"] = settings.db_schema
    return cfg


@lru_cache(maxsize=8)
def _script(extra_version_dirs: tuple[str, ...]):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(make_config(None, extra_version_dirs))


def script_directory(extra_version_dirs: Sequence[Path | str] = ()):
    return _script(tuple(str(Path(d).resolve()) for d in extra_version_dirs))


def heads(extra_version_dirs: Sequence[Path | str] = ()) -> frozenset[str]:
    """The head revision(s) of the scripts (one, unless someone forgot a merge revision)."""
    return frozenset(script_directory(extra_version_dirs).get_heads())


async def at_head(conn: psycopg.AsyncConnection, schema: str, head: frozenset[str]) -> bool:
    """Whether `schema` is already at `head`. Reads the catalog and the version table only: no
    lock on events or the rollup tables, nor a wait behind one held there."""
    name = f"{quote_ident(schema)}.{quote_ident(VERSION_TABLE)}"
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    if not (await cur.fetchone())[0]:
        return False
    cur = await conn.execute(sql.SQL("SELECT version_num FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(VERSION_TABLE)))
    return frozenset(r[0] for r in await cur.fetchall()) == head


@contextmanager
def connection(settings: Settings) -> Iterator:
    """A SQLAlchemy connection (psycopg 3 driver) inside one transaction, committed on success.
    psycopg errors come out as themselves, not wrapped by SQLAlchemy, so callers tell outages
    from failures as before."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = str(settings.database_url)
    # `creator`: any form DATABASE_URL takes (a URL or key=value conninfo) reaches libpq as is.
    engine = sa.create_engine(
        "postgresql+psycopg://", poolclass=NullPool,
        creator=lambda: psycopg.connect(url, connect_timeout=max(1, int(settings.db_timeout))))
    try:
        with engine.begin() as conn:
            yield conn
    except sa.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from exc
        raise
    finally:
        engine.dispose()


@contextmanager
def locked_connection(settings: Settings) -> Iterator:
    """connection() holding the bootstrap lock until it commits, with the extension and the
    schema present and `search_path` set to the schema (for this transaction)."""
    schema = settings.db_schema
    with connection(settings) as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS timescaledb")
        exists = conn.exec_driver_sql(
            "SELECT 1 FROM pg_namespace WHERE nspname = %(s)s", {"s": schema}).first()
        if exists is None:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS checks the database-level CREATE
            # privilege first, which a least-privilege owner of an existing schema lacks.
            conn.exec_driver_sql(f"CREATE SCHEMA {quote_ident(schema)}")
        conn.exec_driver_sql("SELECT set_config('search_path', %(p)s, true)",
                             {"p": f"{quote_ident(schema)}, public"})
        yield conn


def current_revisions(conn, schema: str) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"version_table_schema": schema})
    return tuple(ctx.get_current_heads())


def _legacy_digest(conn, schema: str) -> str | None:
    """The digest a pre-migration bootstrap recorded, if this schema has one."""
    name = f"{quote_ident(schema)}.{quote_ident(LEGACY_TABLE)}"
    if conn.exec_driver_sql("SELECT to_regclass(%(n)s)", {"n": name}).scalar() is None:
        return None
    return conn.exec_driver_sql(f"SELECT sha256 FROM {name}").scalar()


def upgrade(settings: Settings, target: str = "head", *,
            extra_version_dirs: Sequence[Path | str] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Migrate the configured schema to `target`; returns the revisions before and after."""
    from alembic import command

    cfg = make_config(settings, extra_version_dirs)
    schema = settings.db_schema
    with locked_connection(settings) as conn:
        cfg.attributes["connection"] = conn
        before = current_revisions(conn, schema)
        if not before:
            recorded = _legacy_digest(conn, schema)
            if recorded is not None:
                baseline = script_directory(extra_version_dirs).get_revision(BASELINE).module
                driver = conn.connection.driver_connection
                if recorded == baseline.legacy_digest(driver, schema, settings.events_chunk_interval):
                    # Made by the bootstrap of old with exactly the baseline's DDL: nothing to run.
                    command.stamp(cfg, BASELINE)
                    log.info("schema made before migrations: baseline stamped",
                             extra={"schema": schema, "revision": BASELINE})
                else:  # an older DDL: the baseline runs (idempotent) and brings it up to date
                    log.info("schema made before migrations with another DDL: the baseline runs",
                             extra={"schema": schema})
        command.upgrade(cfg, target)
        after = current_revisions(conn, schema)
    if after != before:
        log.info("schema migrated", extra={"schema": schema, "from": ",".join(before) or None,
                                           "to": ",".join(after)})
    return before, after
