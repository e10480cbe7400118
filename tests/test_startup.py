"""Startup: the schema bootstrap is idempotent and safe to race; the events table is a hypertable
with its indexes; every DATABASE_URL / POSTGRES_* form a host hands out resolves."""
from __future__ import annotations

import time
import uuid
from contextlib import contextmanager

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from analytics.config import _database_url, get_settings, normalize_database_url
from support import Server, connect, copy_tree, drop_schema, new_schema_name


def hypertables(db_url: str, schema: str) -> list[tuple]:
    with connect(db_url, schema) as conn:
        return conn.execute(
            "SELECT hypertable_schema, hypertable_name, num_dimensions "
            "FROM timescaledb_information.hypertables WHERE hypertable_schema = %s",
            (schema,)).fetchall()


@contextmanager
def running(srv: Server, **start_kwargs):
    """The server, started; stopped afterwards even when it never became ready."""
    try:
        yield srv.start(**start_kwargs)
    finally:
        srv.stop()


def post_and_get(srv: Server, page: str) -> str:
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
        r = c.post("/api/events/", json={"page": page, "duration": 3})
        assert r.status_code == 201, r.text
        ev_id = r.json()["id"]
        assert c.get(f"/api/events/{ev_id}/").status_code == 200
        return ev_id


# -- the session schema ------------------------------------------------------------------------

def test_events_is_a_hypertable_on_time(db, schema, db_url):
    assert hypertables(db_url, schema) == [(schema, "events", 1)]
    (col, dim_type) = db.execute(
        "SELECT column_name, dimension_type FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = %s AND hypertable_name = 'events'", (schema,)).fetchone()
    assert (col, dim_type) == ("time", "Time")


def test_indexes_exist(db, schema):
    rows = dict(db.execute("SELECT indexname, indexdef FROM pg_indexes "
                           "WHERE schemaname = %s AND tablename = 'events'", (schema,)).fetchall())
    assert "UNIQUE" in rows["events_id_time_key"] and "(id, \"time\")" in rows["events_id_time_key"]
    assert "(page, \"time\" DESC)" in rows["events_page_time_idx"]
    assert any("(\"time\" DESC)" in d for d in rows.values())  # create_hypertable's own


def test_columns(db, schema):
    cols = dict(db.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = %s AND table_name = 'events'", (schema,)).fetchall())
    assert cols["id"] == "uuid"
    assert cols["time"] == "timestamp with time zone"
    assert cols["is_bot"] == "boolean"
    for c in ("page", "ip_address", "user_agent", "referrer", "session_id", "description",
              "os", "browser", "device"):
        assert cols[c] == "text", c
    assert cols["duration"] == "integer"


# -- startup twice -----------------------------------------------------------------------------

def test_startup_twice_in_turn_keeps_data(db_url):
    schema = new_schema_name("twice")
    try:
        with running(Server(db_url, schema)) as a:
            kept = post_and_get(a, "/before-restart")
        with running(Server(db_url, schema)) as b:
            with httpx.Client(base_url=b.url, headers=b.headers, timeout=30) as c:
                assert c.get(f"/api/events/{kept}/").json()["page"] == "/before-restart"
            post_and_get(b, "/after-restart")
        assert hypertables(db_url, schema) == [(schema, "events", 1)]
        with connect(db_url, schema) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)
    finally:
        drop_schema(db_url, schema)


def test_restart_while_events_is_locked_is_ready_at_once(db_url):
    """The schema is at the migrations' head: a worker that starts while something holds a lock on
    events (a long ALTER, an operator's LOCK TABLE) has nothing to wait for and serves reads.
    Re-running it would wait for that lock, answering 503 all along."""
    schema = new_schema_name("locked")
    try:
        with running(Server(db_url, schema)) as a:
            kept = post_and_get(a, "/before-lock")
        with connect(db_url, schema) as lock:
            lock.autocommit = False
            lock.execute("LOCK TABLE events IN EXCLUSIVE MODE")  # writes wait, reads go on
            with running(Server(db_url, schema), timeout=30) as b:
                with httpx.Client(base_url=b.url, headers=b.headers, timeout=30) as c:
                    assert c.get(f"/api/events/{kept}/").json()["page"] == "/before-lock"
            lock.rollback()
    finally:
        drop_schema(db_url, schema)


PROBE_REVISION = '''"""test only: a probe that counts how often it ran"""
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE migration_probe (n serial PRIMARY KEY, at timestamptz DEFAULT now())")
    op.execute("INSERT INTO migration_probe DEFAULT VALUES")


def downgrade():
    op.execute("DROP TABLE migration_probe")
'''


def test_new_revision_runs_once(db_url, tmp_path):
    """A new version of the service ships a new revision: its first start (two workers racing)
    runs it once, under the lock; the next start finds the schema at head and runs nothing."""
    from analytics import migrations

    schema = new_schema_name("rev")
    (down,) = migrations.heads()
    tree = copy_tree(tmp_path / "next-version")
    (tree / "src/analytics/migrations/versions/t_probe.py").write_text(
        PROBE_REVISION.format(rev="t_probe", down=down))
    try:
        with running(Server(db_url, schema)) as old:
            kept = post_and_get(old, "/before-upgrade")
        for start in range(2):
            with running(Server(db_url, schema, workers=2, root=tree,
                                log_path=tmp_path / f"start{start}.log")) as new:
                with httpx.Client(base_url=new.url, headers=new.headers, timeout=30) as c:
                    assert c.get(f"/api/events/{kept}/").json()["page"] == "/before-upgrade"
                post_and_get(new, f"/after-upgrade/{start}")
                log = new.log()
            assert ("Running upgrade" in log) == (start == 0), log
            with connect(db_url, schema) as conn:
                assert conn.execute("SELECT count(*) FROM migration_probe").fetchone() == (1,)
                assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("t_probe",)]
                assert conn.execute("SELECT count(*) FROM events").fetchone() == (start + 2,)
    finally:
        drop_schema(db_url, schema)


def test_two_servers_racing_on_a_fresh_schema(db_url, tmp_path):
    schema = new_schema_name("race")
    servers = [Server(db_url, schema, workers=2, log_path=tmp_path / f"s{i}.log") for i in range(2)]
    try:
        for s in servers:
            s.start(wait_ready=False)
        for s in servers:
            s.wait_ready(timeout=60)
        ids = [post_and_get(s, f"/race/{i}") for i, s in enumerate(servers)]
        # Four workers bootstrapped the same schema; one hypertable, nothing lost, no errors.
        assert hypertables(db_url, schema) == [(schema, "events", 1)]
        with connect(db_url, schema) as conn:
            stored = {str(r[0]) for r in conn.execute("SELECT id FROM events").fetchall()}
        assert stored == set(ids)
        for s in servers:
            log = s.log()
            assert log.count('"schema ready"') == 2, log
            assert "Traceback" not in log and '"level": "error"' not in log, log
    finally:
        for s in servers:
            s.stop()
        drop_schema(db_url, schema)


def test_schema_name_that_needs_quoting(db_url):
    """DB_SCHEMA with capitals and a dash: created, found, and used as named."""
    schema = f"Analytics-{uuid.uuid4().hex[:6].upper()}"
    try:
        with running(Server(db_url, schema)) as srv:
            post_and_get(srv, "/quoted")
        assert hypertables(db_url, schema) == [(schema, "events", 1)]
        with connect(db_url, "public") as conn:
            n = conn.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()
        assert n == (1,)
    finally:
        drop_schema(db_url, schema)


# -- database URL forms ------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("postgres://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
    ("postgresql://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
    ("postgresql+psycopg://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
    ("postgresql+psycopg2://u:p@h/db", "postgresql://u:p@h/db"),
    ("postgresql+asyncpg://u:p@h/db", "postgresql://u:p@h/db"),
    ("timescaledb+psycopg://u:p@h/db", "postgresql://u:p@h/db"),
    ("timescaledb://u:p@h/db", "postgresql://u:p@h/db"),
    ("  postgres://u@h/db?sslmode=require\n", "postgresql://u@h/db?sslmode=require"),
    ("host=h port=5432 dbname=db", "host=h port=5432 dbname=db"),
])
def test_normalize_database_url(given, expected):
    assert normalize_database_url(given) == expected


ENV_VARS = ("DATABASE_URL", "POSTGRES_HOST", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_PORT",
            "POSTGRES_DB", "LOCAL_DB_PORT")


@pytest.fixture()
def clean_env(monkeypatch):
    for k in ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_database_url_env_wins(clean_env):
    clean_env.setenv("DATABASE_URL", "postgres://railway:secret@db.internal:6543/railway")
    clean_env.setenv("POSTGRES_HOST", "ignored")
    assert _database_url() == "postgresql://railway:secret@db.internal:6543/railway"
    assert "secret" not in repr(get_settings().database_url)


def test_blank_database_url_falls_back(clean_env):
    clean_env.setenv("DATABASE_URL", "   ")
    clean_env.setenv("POSTGRES_HOST", "db")
    assert conninfo_to_dict(_database_url())["host"] == "db"


def test_postgres_vars(clean_env):
    clean_env.setenv("POSTGRES_HOST", "timescale_pg_db")
    clean_env.setenv("POSTGRES_USER", "app user")
    clean_env.setenv("POSTGRES_PASSWORD", "p@ss:w/rd#?%")
    clean_env.setenv("POSTGRES_PORT", "5433")
    clean_env.setenv("POSTGRES_DB", "analytics db")
    d = conninfo_to_dict(_database_url())
    assert d == {"host": "timescale_pg_db", "port": "5433", "user": "app user",
                 "password": "p@ss:w/rd#?%", "dbname": "analytics db"}


def test_postgres_vars_defaults(clean_env):
    clean_env.setenv("POSTGRES_HOST", "h")
    assert conninfo_to_dict(_database_url()) == {"host": "h", "port": "5432", "user": "postgres",
                                                 "dbname": "postgres"}


@pytest.mark.parametrize("host", ["::1", "/var/run/postgresql"])
def test_postgres_host_ipv6_and_socket(clean_env, host):
    clean_env.setenv("POSTGRES_HOST", host)
    assert conninfo_to_dict(_database_url())["host"] == host


def test_local_cluster_default(clean_env):
    clean_env.setenv("LOCAL_DB_PORT", "55555")
    d = conninfo_to_dict(_database_url())
    assert (d["host"], d["port"], d["dbname"]) == ("127.0.0.1", "55555", "analytics")


def _as_url(db_url: str, scheme: str) -> str:
    d = conninfo_to_dict(db_url)
    auth = d.get("user", "postgres") + (f":{d['password']}" if d.get("password") else "")
    return f"{scheme}{auth}@{d.get('host', '127.0.0.1')}:{d.get('port', '5432')}/{d.get('dbname', 'postgres')}"


@pytest.mark.parametrize("form", ["postgres://", "postgresql+psycopg://", "postgres_vars"])
def test_real_server_with_url_form(db_url, form):
    schema = new_schema_name("url")
    d = conninfo_to_dict(db_url)
    if d.get("host", "").startswith("/") or "password" in d and not d["password"].isalnum():
        pytest.skip("the test builds URLs by hand for TCP hosts with simple passwords")
    if form == "postgres_vars":
        env = {"DATABASE_URL": "", "POSTGRES_HOST": d.get("host", "127.0.0.1"),
               "POSTGRES_PORT": d.get("port", "5432"), "POSTGRES_USER": d.get("user", "postgres"),
               "POSTGRES_PASSWORD": d.get("password", ""), "POSTGRES_DB": d.get("dbname", "postgres")}
    else:
        env = {"DATABASE_URL": _as_url(db_url, form)}
    try:
        with running(Server(db_url, schema, env=env)) as srv:
            post_and_get(srv, f"/form/{form}")
        assert hypertables(db_url, schema) == [(schema, "events", 1)]
    finally:
        drop_schema(db_url, schema)


def test_bootstrap_error_is_logged_and_retried(db_url, tmp_path):
    """The database answers but the bootstrap fails (here: a bad chunk interval). The server
    says so in its log on every attempt and stays alive with 503s, instead of failing silently."""
    schema = new_schema_name("badboot")
    srv = Server(db_url, schema, env={"EVENTS_CHUNK_INTERVAL": "banana"}, log_path=tmp_path / "s.log")
    try:
        srv.start(wait_ready=False)
        srv.wait_ready(path="/healthz", timeout=30)
        deadline = time.monotonic() + 20
        while srv.log().count("schema bootstrap failed") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.log().count("schema bootstrap failed") >= 2, srv.log()
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
            assert c.get("/readyz").status_code == 503
            r = c.post("/api/events/", json={"page": "/x"})
            assert r.status_code == 503 and r.json()["error"] == "database_unavailable"
        assert srv.proc.poll() is None
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def test_least_privilege_user_with_existing_schema(db_url):
    """A host's app user may own its schema without the right to create schemas in the database
    (and the extension is already there): startup must not demand more than it needs."""
    d = conninfo_to_dict(db_url)
    role = f"app_{uuid.uuid4().hex[:8]}"
    schema = new_schema_name("lp")
    with connect(db_url, "public") as admin:
        (is_super,) = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if not is_super:
            pytest.skip("needs a superuser to create a role")
        admin.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        admin.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw_{role}\'')
        admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
        (can_create,) = admin.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE')",
                                      (role,)).fetchone()
        assert not can_create
    try:
        url = _as_url(db_url, "postgresql://").replace(f"{d.get('user', 'postgres')}@",
                                                         f"{role}:pw_{role}@", 1)
        with running(Server(url, schema), timeout=30) as srv:
            post_and_get(srv, "/least-privilege")
        assert hypertables(db_url, schema) == [(schema, "events", 1)]
    finally:
        drop_schema(db_url, schema)
        with connect(db_url, "public") as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
