"""Past one machine: reads from a real streaming replica, and two API instances as one service.

The replica is made by the boot script (`boot/timescaledb.sh replica start`: pg_basebackup -R of
the cluster the tests use, on its own port) when it is not running, and stopped and removed
(`replica drop`) at the end if this module started it. Skipped where the script cannot run: the tests' database is not a local
cluster (DATABASE_URL elsewhere), or PostgreSQL's server binaries are not installed.
"""
from __future__ import annotations

import glob
import os
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from support import ROOT, Server, connect, drop_schema, free_port, new_schema_name

SCRIPT = ROOT / "boot" / "timescaledb.sh"


def _script(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def replica_url(db_url):
    d = conninfo_to_dict(db_url)
    if d.get("host") not in ("127.0.0.1", "localhost", None):
        pytest.skip("the boot script replicates a local cluster; DATABASE_URL names another host")
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"):
        pytest.skip("PostgreSQL server binaries are not installed")
    port = os.environ.get("LOCAL_DB_REPLICA_PORT", "54330")
    env = {**os.environ, "LOCAL_DB_PORT": str(d.get("port") or 5432), "LOCAL_DB_REPLICA_PORT": port}
    started = _script("replica", "status", env=env).returncode != 0
    if started:
        r = _script("replica", "start", env=env)
        assert r.returncode == 0, r.stderr
    d.update(host="127.0.0.1", port=port)
    yield make_conninfo(**d), env
    if started:
        # Stopped and removed, slot included: a stopped replica's slot would hold WAL back on the
        # primary (up to max_slot_wal_keep_size) until someone started it again.
        _script("replica", "drop", env=env)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Reader(threading.Thread):
    """Reads totals over and over, recording (monotonic time, status, served_by)."""

    def __init__(self, url: str, headers: dict) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers
        self.seen: list[tuple[float, int, str | None]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30, headers=self.headers) as c:
            while not self.halt.is_set():
                r = c.get("/api/v1/stats/totals")
                served = r.json()["meta"].get("served_by") if r.status_code == 200 else None
                self.seen.append((time.monotonic(), r.status_code, served))
                time.sleep(0.02)


def _wait_served_by(c: httpx.Client, name: str, timeout: float = 120, **params) -> dict:
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        r = c.get("/api/v1/stats/totals", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["meta"]["served_by"] == name:
            return body
        time.sleep(0.2)
    raise AssertionError(f"not served by {name} in {timeout}s: {body}")


def test_reads_go_to_the_replica_and_back_to_the_primary_when_it_stops(db_url, replica_url):
    url, env = replica_url
    schema = new_schema_name("test_replica")
    interval, max_lag = 0.5, 5
    srv = Server(db_url, schema, env={"DATABASE_READ_URLS": url, "READ_HEALTH_INTERVAL_SECONDS": str(interval),
                                      "READ_MAX_LAG_SECONDS": str(max_lag), "STATS_CACHE_TTL_SECONDS": "0"}).start()
    reader = None
    try:
        with httpx.Client(base_url=srv.url, timeout=30, headers=srv.headers) as c:
            # Served by the replica once it has replayed the schema the server made.
            body = _wait_served_by(c, "replica-1")
            assert 0 <= body["meta"]["replay_lag_seconds"] <= max_lag
            ready = c.get("/readyz", headers=srv.admin_headers).json()
            assert ready["read_replicas"] == [{"name": "replica-1", "usable": True,
                                               "replay_lag_seconds": ready["read_replicas"][0]["replay_lag_seconds"],
                                               "reason": "ok"}]
            # An event written to the primary shows in replica-served answers once replayed.
            page = f"/replica/{uuid.uuid4().hex[:8]}"
            assert c.post("/api/events/", json={"page": page, "time": _now()}).status_code == 201
            deadline = time.monotonic() + 30
            while True:
                body = c.get("/api/v1/stats/totals", params={"page": page}).json()
                if body["meta"]["served_by"] == "replica-1" and body["results"][0]["events"] == 1:
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.1)
            seed = c.get("/api/events/", params={"duration": "1 day", "pages": page})
            assert seed.status_code == 200 and seed.headers["x-served-by"] == "replica-1"
            assert [r["count"] for r in seed.json()] == [1]

            # Replay paused: once its lag passes READ_MAX_LAG_SECONDS it is skipped (the primary
            # answers, with the new event); resumed, it is used again and has the event too.
            with psycopg.connect(url, autocommit=True) as rconn:
                rconn.execute("SELECT pg_wal_replay_pause()")
                try:
                    page2 = page + "-paused"
                    assert c.post("/api/events/", json={"page": page2, "time": _now()}).status_code == 201
                    body = _wait_served_by(c, "primary", timeout=max_lag + interval + 10, page=page2)
                    assert body["results"][0]["events"] == 1
                    assert c.get("/readyz", headers=srv.admin_headers).json()["read_replicas"][0]["reason"].startswith("lagging more than")
                finally:
                    rconn.execute("SELECT pg_wal_replay_resume()")
            body = _wait_served_by(c, "replica-1", page=page2)
            assert body["results"][0]["events"] == 1

            # The replica stops while reads keep coming: every read is answered, by the primary.
            reader = Reader(srv.url, srv.headers)
            reader.start()
            time.sleep(1)
            r = _script("replica", "stop", env=env)
            assert r.returncode == 0, r.stderr
            stopped = time.monotonic()
            time.sleep(interval + 3)
            after = [s for t, _, s in reader.seen if t > stopped + interval + 2]
            assert after and set(after) == {"primary"}, after[-20:]
            body = c.get("/api/v1/stats/totals", params={"page": page}).json()
            assert body["meta"]["served_by"] == "primary" and body["results"][0]["events"] == 1
            assert c.get("/readyz", headers=srv.admin_headers).json()["read_replicas"][0]["usable"] is False

            # Back again: reads return to it.
            r = _script("replica", "start", env=env)
            assert r.returncode == 0, r.stderr
            _wait_served_by(c, "replica-1")
            time.sleep(0.5)
            reader.halt.set()
            reader.join(30)
            statuses = {st for _, st, _ in reader.seen}
            assert statuses == {200}, [x for x in reader.seen if x[1] != 200][:5]
            assert {s for _, _, s in reader.seen} == {"primary", "replica-1"}
    finally:
        if reader is not None:
            reader.halt.set()
        srv.stop()
        drop_schema(db_url, schema)
        _script("replica", "start", env=env)  # as the fixture found it (it stops it if it started it)


def test_a_read_url_that_is_not_a_replica_or_not_reachable_is_skipped(db_url):
    """The primary's own URL (not in recovery) and a closed port: both skipped, reads answered by
    the primary, and neither URL (nor its password) shows in answers or logs."""
    schema = new_schema_name("test_replica_bad")
    d = conninfo_to_dict(db_url)
    d.update(port=str(free_port()), password="sekret-pw-42")
    closed = make_conninfo(**d)
    srv = Server(db_url, schema, env={"DATABASE_READ_URLS": f"{db_url},{closed}",
                                      "READ_HEALTH_INTERVAL_SECONDS": "0.3"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30, headers=srv.headers) as c:
            time.sleep(1)
            ready = c.get("/readyz", headers=srv.admin_headers)
            replicas = ready.json()["read_replicas"]
            assert [(x["name"], x["usable"]) for x in replicas] == [("replica-1", False), ("replica-2", False)]
            assert replicas[0]["reason"] == "not a replica (not in recovery)"
            assert replicas[1]["reason"].startswith("unreachable")
            r = c.get("/api/v1/stats/totals")
            assert r.status_code == 200 and r.json()["meta"]["served_by"] == "primary"
            assert c.get("/api/events/", params={"duration": "1 day"}).headers["x-served-by"] == "primary"
            for text in (ready.text, r.text):
                assert "sekret" not in text and "password" not in text
    finally:
        srv.stop()
        drop_schema(db_url, schema)
    assert "sekret" not in srv.log()


def test_two_api_instances_store_a_retried_event_once(db_url):
    """Stateless API replicas: the same (id, time) posted to two instances against one database
    is stored once, one after the other and at the same moment; both answer the same stats."""
    schema = new_schema_name("test_two_apis")
    a = Server(db_url, schema).start()
    b = Server(db_url, schema).start()
    try:
        event = {"id": str(uuid.uuid4()), "time": _now(), "page": "/twice"}
        ra = httpx.post(a.url + "/api/events/", json=event, timeout=30)
        rb = httpx.post(b.url + "/api/events/", json=event, timeout=30)
        assert (ra.status_code, rb.status_code) == (201, 200)
        assert rb.json()["duplicate"] is True

        # The same event to both at once, many times over: each stored once.
        results: list[int] = []
        events = [{"id": str(uuid.uuid4()), "time": _now(), "page": "/twice"} for _ in range(20)]

        def post(srv, e):
            results.append(httpx.post(srv.url + "/api/events/", json=e, timeout=30).status_code)

        threads = [threading.Thread(target=post, args=(s, e)) for e in events for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == [200] * 20 + [201] * 20
        with connect(db_url, schema) as conn:
            n, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM events WHERE page = '/twice'").fetchone()
        assert n == distinct == 21
        for srv in (a, b):
            body = httpx.get(srv.url + "/api/v1/stats/totals", params={"page": "/twice"}, timeout=30,
                             headers=srv.headers).json()
            assert body["results"][0]["events"] == 21
    finally:
        a.stop()
        b.stop()
        drop_schema(db_url, schema)


def test_replay_lag_rules():
    from analytics.replicas import replay_lag

    assert replay_lag(False, True, True, 0.0) is None  # not in recovery: not a replica
    assert replay_lag(True, True, True, 3600.0) == 0.0  # idle primary, everything replayed
    assert replay_lag(True, False, True, 12.5) == 12.5  # receiver down: time since the last replay
    assert replay_lag(True, True, False, 2.0) == 2.0  # still replaying
    assert replay_lag(True, True, False, None) == float("inf")  # nothing replayed yet: unknown
