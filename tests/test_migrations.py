"""Schema migrations (Alembic): a database made before them upgrades without losing a row, a new
revision adds a column to a database holding data, `make migrate` does it by hand, and the
revisions still produce what the code's DDL helpers describe."""
from __future__ import annotations

import json

import ast
import os
import random
import re
import subprocess
import sys
import time
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


def events_rows(conn, without: tuple[str, ...] = ()) -> list[str]:
    """Every stored event, every column (but `without`), as text."""
    return [r[0] for r in conn.execute(
        "SELECT (to_jsonb(e) - %s::text[])::text FROM events e ORDER BY id, time", (list(without),))]


# Columns later revisions add to events (0004: visitor_id, NULL; 0007: the event fields, their
# defaults) and to every agg rollup (0008: custom, 0).
NEW_AGG = ("rollup_agg_evt_", "rollup_agg_geo_", "rollup_agg_utm_", "rollup_agg_src_")  # 0008
NOT_READY = ("rollup_agg_pagegeo_", "rollup_agg_pageutm_", "rollup_dur_page_")  # 0012: empty until --missing
ADDED_EVENT_COLUMNS = ("visitor_id", "name", "props", "hostname", "utm_source", "utm_medium", "utm_campaign",
                       "country")


def rollup_rows(conn) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename LIKE 'rollup\\_%%' ORDER BY 1")]
    return {t: [r[0] for r in conn.execute(f"SELECT (to_jsonb(r) - 'custom')::text FROM \"{t}\" r ORDER BY 1")]
            for t in tables}


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
                # The baseline is stamped without DDL, so while events is locked. (Revision 0004,
                # issue 10, adds a column to events: that one waits for the lock.)
                new.start(wait_ready=False)
                deadline = time.monotonic() + 30
                while "baseline stamped" not in new.log():
                    assert time.monotonic() < deadline, new.log()
                    time.sleep(0.1)
                lock.rollback()
                new.wait_ready(30)
                with connect(db_url, schema) as conn:
                    assert version(conn) == sorted(migrations.heads())
                    assert events_rows(conn, without=ADDED_EVENT_COLUMNS) == events
                    now = rollup_rows(conn)
                    # 0004 added the vis tables, empty and ready (no stored event has a visitor_id);
                    # 0008 the src tables, filled from the total tables and as ready as they are;
                    # 0012 the page-filter tables, empty and not ready (events existed)
                    meta = sorted(now.pop("rollup_meta"))
                    assert meta == sorted(rollups["rollup_meta"] + [
                        json.dumps({"name": t, "ready": not t.startswith(NOT_READY), "rebuilt_at": None})
                        for t in set(now) - set(rollups)
                        if t.startswith(("rollup_vis_", "rollup_visit_", *NEW_AGG, *NOT_READY))]), meta
                    for table in [t for t in set(now) - set(rollups) if t.startswith(NEW_AGG)]:
                        grain = table.rsplit("_", 1)[1]
                        src = [json.loads(r) for r in now.pop(table)]
                        key = lambda r: (r["bucket"], r["is_bot"])  # noqa: E731
                        assert sorted(({k: v for k, v in r.items() if k in ("bucket", "is_bot", "events", "dur_sum",
                                                                             "dur_n")} for r in src), key=key) == sorted(
                            (json.loads(r) for r in rollups[f"rollup_agg_total_{grain}"]), key=key)
                        assert {(r.get("name", "pageview"), r.get("country", ""), r.get("utm_source", ""))
                                for r in src} == {("pageview", "", "")}
                    assert {t: now[t] for t in rollups if t != "rollup_meta"} == {
                        t: v for t, v in rollups.items() if t != "rollup_meta"}
                    assert not any(now[t] for t in set(now) - set(rollups))
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
    baseline runs, idempotently, and repairs what differs (here: a dropped index); then the
    later revisions."""
    schema = new_schema_name("olderddl")
    settings = settings_for(db_url, schema)
    try:
        migrations.upgrade(settings, migrations.BASELINE)  # what the code before migrations made
        with connect(db_url, schema) as conn:
            conn.execute("DROP TABLE alembic_version")
            conn.execute("DROP INDEX events_page_time_idx")
            conn.execute("CREATE TABLE schema_ddl (one boolean PRIMARY KEY DEFAULT true, sha256 text NOT NULL)")
            conn.execute("INSERT INTO schema_ddl (sha256) VALUES ('an older version')")
        before, after = migrations.upgrade(settings)
        assert (before, after) == ((), tuple(migrations.heads()))
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
            assert events_rows(conn, without=("test_region",)) == events  # every row, every old column
            assert conn.execute("SELECT array_agg(DISTINCT test_region), count(*) FROM events").fetchone() == (
                ["unknown"], 600)
            assert conn.execute("SELECT to_regclass('test_region_idx') IS NOT NULL").fetchone() == (True,)
            assert rollup_rows(conn) == rollups
        # Another start of this version (head = the new revision) runs nothing more.
        assert migrations.upgrade(settings_for(db_url, schema), extra_version_dirs=[versions]) == (
            (new_rev,), (new_rev,))
    finally:
        drop_schema(db_url, schema)


def test_make_migrate(db_url):
    """`make migrate` takes a new schema to head, says so, and does nothing the second time;
    MIGRATE_ARGS=current and history report it."""
    schema = new_schema_name("make")
    env = {**os.environ, "DATABASE_URL": db_url, "DB_SCHEMA": schema}
    env.pop("MAKEFLAGS", None)

    def make(*args: str) -> str:
        run = subprocess.run(["make", "-s", "--no-print-directory", "migrate", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    (head,) = migrations.heads()
    try:
        assert f"(empty) -> {head}" in make()
        assert f"{head} -> {head}" in make()
        assert make("MIGRATE_ARGS=current").strip().splitlines()[-1] == head
        assert f"-> {migrations.BASELINE}" in make("MIGRATE_ARGS=history")
        with connect(db_url, schema) as conn:
            assert version(conn) == [head]
            assert conn.execute("SELECT count(*) FROM timescaledb_information.hypertables "
                                "WHERE hypertable_schema = %s", (schema,)).fetchone() == (1,)
    finally:
        drop_schema(db_url, schema)


def test_a_schema_at_an_unknown_revision_is_refused(db_url):
    """A database that a newer version migrated (its revision is unknown here) is not served as
    if it were this version's: the migration refuses, naming the revision."""
    from alembic.util import CommandError

    schema = new_schema_name("unknown")
    settings = settings_for(db_url, schema)
    try:
        migrations.upgrade(settings)
        with connect(db_url, schema) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(CommandError, match="9999"):
            migrations.upgrade(settings)
    finally:
        drop_schema(db_url, schema)


def catalog(conn, schema: str) -> dict[str, list]:
    """What a schema holds, with its name replaced by S: relations, columns, constraints,
    indexes, triggers, functions (bodies included), hypertables."""
    def rows(query: str) -> list[tuple]:
        out = conn.execute(query, {"s": schema}).fetchall()
        return sorted(tuple(str(v).replace(f'"{schema}"', "S").replace(schema, "S") for v in r) for r in out)

    skip = f"'{migrations.VERSION_TABLE}', '{migrations.VERSION_TABLE}_pkc'"
    return {
        "relations": rows(f"""SELECT c.relname, c.relkind, coalesce(c.reloptions::text, '') FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s AND c.relname NOT IN ({skip})"""),
        "columns": rows(f"""SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
            FROM information_schema.columns WHERE table_schema = %(s)s AND table_name NOT IN ({skip})"""),
        # NOT VALID (a constraint added to a table holding rows, without checking them) is a
        # state of the data, not a shape: a revision may add a CHECK that way.
        "constraints": rows(f"""SELECT c.conrelid::regclass::text, c.conname,
                   replace(pg_get_constraintdef(c.oid), ' NOT VALID', '')
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE n.nspname = %(s)s AND c.conname NOT IN ({skip})"""),
        "indexes": rows(f"""SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = %(s)s AND tablename NOT IN ({skip})"""),
        "triggers": rows("""SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
            JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(s)s AND NOT t.tgisinternal"""),
        "functions": rows("""SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s"""),
        "hypertables": rows("""SELECT hypertable_name, num_dimensions FROM timescaledb_information.hypertables
            WHERE hypertable_schema = %(s)s"""),
    }


def test_the_revisions_make_what_the_ddl_helpers_describe(db_url):
    """One schema made by the migrations, one by the code's DDL helpers (events_ddl, rollup_ddl):
    the same tables, columns, constraints, indexes, triggers and function bodies. When this
    fails, a helper changed without a revision: add one that makes the difference (README,
    "Schema migrations"); the diff below says what it is."""
    migrated, rendered = new_schema_name("bymig"), new_schema_name("byddl")
    try:
        migrations.upgrade(settings_for(db_url, migrated))
        with psycopg.connect(db_url, autocommit=True) as conn:
            with conn.transaction():
                for stmt in current_ddl(rendered, Settings().events_chunk_interval):
                    conn.execute(stmt)
            a, b = catalog(conn, migrated), catalog(conn, rendered)
        assert sum(len(v) for v in a.values()) > 100
        for part in a:
            assert a[part] == b[part], (part, sorted(set(a[part]) ^ set(b[part])))
    finally:
        drop_schema(db_url, migrated)
        drop_schema(db_url, rendered)


def test_the_baseline_is_frozen():
    """The baseline revision does not call the DDL helpers (a later change to them must not
    change what it does): it imports nothing of the service but migrations.helpers."""
    (path,) = migrations.VERSIONS_DIR.glob(f"{migrations.BASELINE}_*.py")
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported if m.startswith("analytics")} == {"analytics.migrations"}
    assert imported <= {"__future__", "hashlib", "psycopg", "analytics.migrations"}, imported
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             and n.module == "analytics.migrations" for a in n.names}
    assert names == {"helpers"}
