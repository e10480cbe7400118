"""Schema migrations (Alembic): a database made before them upgrades without losing a row, a new
revision adds a column to a database holding data, `make migrate` does it by hand, and the
revisions still produce what the code's DDL helpers describe."""
from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest

import stats_reference as ref
from analytics import migrations
from analytics.config import Secret, Settings
from analytics.schema import current_ddl
from support import ROOT, SRC, Server, connect, copy_tree, drop_schema, new_schema_name

# The last commit whose bootstrap recorded its DDL's digest in `schema_ddl` (before migrations).
LEGACY_COMMIT = "d242daf435b9bb9abb1a433396c77e72baf9bd32"
UTC = timezone.utc
SPAN = (datetime.now(UTC) - timedelta(days=40), datetime.now(UTC) - timedelta(days=1))
OLD_EVENTS = {"MAX_EVENT_AGE_DAYS": "60"}


def settings_for(db_url: str, schema: str) -> Settings:
    return Settings(database_url=Secret(db_url), db_schema=schema)


def post_events(url: str, n: int, seed: int) -> None:
    events = ref.make_events(random.Random(seed), [SPAN], n, sessions=80)
    with httpx.Client(base_url=url, timeout=60) as client:
        ref.post_batches(client, events, size=250)


def events_rows(conn, without: str = "") -> list[str]:
    """Every stored event, every column (but `without`), as text."""
    return [r[0] for r in conn.execute(
        "SELECT (to_jsonb(e) - %s::text)::text FROM events e ORDER BY id, time", (without,))]


def rollup_rows(conn) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename LIKE 'rollup\\_%%' ORDER BY 1")]
    return {t: [r[0] for r in conn.execute(f'SELECT r::text FROM "{t}" r ORDER BY 1')] for t in tables}


def rollups_agree_with_raw(conn) -> None:
    """Totals and first-seen sessions still follow the raw events (the triggers work)."""
    (raw_events, raw_sessions) = conn.execute(
        "SELECT count(*), count(DISTINCT session_id) FILTER (WHERE NOT is_bot) FROM events").fetchone()
    (rolled,) = conn.execute("SELECT sum(events) FROM rollup_agg_total_1d").fetchone()
    (first_seen,) = conn.execute(
        "SELECT sum(n) FROM rollup_ses_total_1d WHERE prev = '-infinity'").fetchone()
    assert (rolled, first_seen) == (raw_events, raw_sessions)


def version(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]


@pytest.fixture(scope="module")
def legacy_tree(tmp_path_factory) -> Path:
    """The service as it was before migrations, to make a database the way it did."""
    try:
        return copy_tree(tmp_path_factory.mktemp("legacy"), LEGACY_COMMIT)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"needs the git history (commit {LEGACY_COMMIT[:7]}): {exc}")


def test_database_made_before_migrations_upgrades_without_losing_a_row(db_url, legacy_tree, tmp_path):
    """The old code makes the schema and stores events (and their rollups); the new code
    recognises it by its recorded digest and stamps the baseline, running no DDL: it is ready
    even while events is locked. Every row and every rollup row is still there, the version is
    head, and new events keep the rollups exact."""
    schema = new_schema_name("legacy")
    try:
        old = Server(db_url, schema, root=legacy_tree, env=OLD_EVENTS, log_path=tmp_path / "old.log")
        try:
            old.start()
            post_events(old.url, 1200, seed=9)
        finally:
            old.stop()
        with connect(db_url, schema) as conn:
            assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)
            (sha,) = conn.execute("SELECT sha256 FROM schema_ddl").fetchone()
            events, rollups = events_rows(conn), rollup_rows(conn)
        assert len(events) == 1200 and sum(map(len, rollups.values())) > 1000

        with connect(db_url, schema) as lock:
            lock.autocommit = False
            lock.execute("LOCK TABLE events IN EXCLUSIVE MODE")  # DDL on events would wait for it
            new = Server(db_url, schema, env=OLD_EVENTS, log_path=tmp_path / "new.log")
            try:
                new.start(timeout=30)
                lock.rollback()
                assert "baseline stamped" in new.log(), new.log()
                with connect(db_url, schema) as conn:
                    assert version(conn) == sorted(migrations.heads())
                    assert events_rows(conn) == events
                    assert rollup_rows(conn) == rollups
                    assert conn.execute("SELECT sha256 FROM schema_ddl").fetchone() == (sha,)
                post_events(new.url, 300, seed=10)
            finally:
                lock.rollback()
                new.stop()
        with connect(db_url, schema) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (1500,)
            rollups_agree_with_raw(conn)
    finally:
        drop_schema(db_url, schema)


def test_database_made_with_an_older_ddl_runs_the_baseline(db_url):
    """A recorded digest that is not the baseline's (a version older than the baseline): the
    baseline runs, idempotently, and repairs what differs (here: a dropped index)."""
    schema = new_schema_name("olderddl")
    settings = settings_for(db_url, schema)
    try:
        migrations.upgrade(settings)
        with connect(db_url, schema) as conn:
            conn.execute("DROP TABLE alembic_version")
            conn.execute("DROP INDEX events_page_time_idx")
            conn.execute("CREATE TABLE schema_ddl (one boolean PRIMARY KEY DEFAULT true, sha256 text NOT NULL)")
            conn.execute("INSERT INTO schema_ddl (sha256) VALUES ('an older version')")
        before, after = migrations.upgrade(settings)
        assert (before, after) == ((), (migrations.BASELINE,))
        with connect(db_url, schema) as conn:
            assert conn.execute("SELECT to_regclass('events_page_time_idx') IS NOT NULL").fetchone() == (True,)
    finally:
        drop_schema(db_url, schema)


ADD_COLUMN = '''def upgrade() -> None:
    op.add_column("events", sa.Column("test_region", sa.Text(), nullable=False, server_default="unknown"))
    helpers.execute('CREATE INDEX test_region_idx ON "__schema__".events (test_region, time DESC)')
'''


def test_a_new_revision_adds_a_column_to_a_database_with_data(db_url, tmp_path):
    """The path the next issues take: `revision -m` writes the file after the head, numbered
    next; its upgrade adds a column (and an index) to events holding data; nothing is lost."""
    schema = new_schema_name("addcol")
    versions = tmp_path / "versions"
    versions.mkdir()
    try:
        srv = Server(db_url, schema, env=OLD_EVENTS, log_path=tmp_path / "s.log")
        try:
            srv.start()
            post_events(srv.url, 600, seed=11)
        finally:
            srv.stop()
        with connect(db_url, schema) as conn:
            events, rollups = events_rows(conn), rollup_rows(conn)

        made = subprocess.run(
            [sys.executable, "-m", "analytics.migrations", "revision", "-m", "add test region",
             "--version-path", str(versions)], env={**os.environ, "PYTHONPATH": str(SRC),
                                                     "DATABASE_URL": db_url, "DB_SCHEMA": schema},
            capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        (path,) = versions.glob("*.py")
        (head,) = migrations.heads()
        source = path.read_text()
        new_rev = f"{int(head) + 1:04d}"
        assert f"revision = '{new_rev}'" in source and f"down_revision = '{head}'" in source, source
        path.write_text(re.sub(r"def upgrade\(\) -> None:\n(.*\n)*?    pass\n", ADD_COLUMN, source, count=1))

        before, after = migrations.upgrade(settings_for(db_url, schema), extra_version_dirs=[versions])
        assert (before, after) == ((head,), (new_rev,))
        with connect(db_url, schema) as conn:
            assert version(conn) == [new_rev]
            assert events_rows(conn, without="test_region") == events  # every row, every old column
            assert conn.execute("SELECT array_agg(DISTINCT test_region), count(*) FROM events").fetchone() == (
                ["unknown"], 600)
            assert conn.execute("SELECT to_regclass('test_region_idx') IS NOT NULL").fetchone() == (True,)
            assert rollup_rows(conn) == rollups
        # Another start of this version (head = the new revision) runs nothing more.
        assert migrations.upgrade(settings_for(db_url, schema), extra_version_dirs=[versions]) == (
            (new_rev,), (new_rev,))
    finally:
        drop_schema(db_url, schema)
