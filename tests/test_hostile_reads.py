"""Issue 9, the read side: nothing a dashboard client asks can hurt the service.

- calendar extremes (years 1 and 9999, any interval and zone, compare=previous before the
  supported range) are 422s naming the parameter, never 500s;
- query strings of any length are 4xx with a message on every read route;
- expensive reads cannot starve writes: 25 concurrent raw reads over a long range while single
  events are posted, and every post is a 2xx within the writer's deadline; an exhausted read
  pool is that read's 503, never the writer's;
- `source=raw` is an operator's knob (STATS_ALLOW_RAW_SOURCE), otherwise a 422;
- the seed endpoint's answer is capped (SEED_MAX_ROWS): past it a 422 naming `duration`;
- identical questions in flight at once are answered by one query (single flight), and the
  answer cache is bounded in bytes.
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from support import Server, connect, drop_schema, new_schema_name

WRITE_DEADLINE_S = 10.0   # WRITE_TIMEOUT_SECONDS, the writer's deadline (default)
BULK_EVENTS = 300_000     # raw events over ~107 days: a scan of them takes ~0.5-1 s
SEED_CAP = 20


def _names(r: httpx.Response, status: int, field: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert any(field in d.get("loc", ()) for d in body["detail"]), body


# -- calendar extremes ---------------------------------------------------------------------------
@pytest.mark.parametrize("path, field", [
    # the two 500s seen on the code that landed
    ("/api/v1/stats/timeseries?end=9999-12-31T00:00:00Z", "end"),
    ("/api/v1/stats/totals?start=0001-01-01T00:00:01Z&end=0001-01-02T00:00:00Z&compare=previous", "start"),
    # a previous period that would go before the supported range
    ("/api/v1/stats/totals?start=1900-01-02T00:00:00Z&end=1900-01-04T00:00:00Z&compare=previous", "compare"),
    ("/api/v1/stats/totals?start=9999-12-31T00:00:00&timezone=Pacific/Kiritimati", "start"),
    ("/api/v1/stats/breakdown?group_by=page&end=0001-01-01T00:00:00&timezone=America/New_York", "end"),
    ("/api/v1/stats/timeseries?start=9999-12-31T23:59:59.999999-12:00", "start"),
])
def test_calendar_extremes_are_422_naming_the_parameter(client, path, field):
    _names(client.get(path), 422, field)


def test_no_instant_interval_or_zone_gives_a_500(client):
    """Years 1 and 9999 and the edges of the supported range, as start or end, with every kind
    of interval and zones far from UTC: a 200 or a 422, nothing else."""
    instants = ["0001-01-01T00:00:00", "0001-01-01T00:00:01Z", "0001-12-31T23:00:00+14:00",
                "9999-12-31T23:59:59", "9999-12-31T00:00:00Z", "9999-01-01T00:00:00-12:00",
                "1900-01-01T00:00:00Z", "1900-01-01T00:00:00", "9000-01-01T00:00:00Z", "8999-12-31T12:00:00"]
    zones = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu", "Europe/Amsterdam"]
    intervals = ["1 minute", "1 hour", "7 hours", "1 day", "1 week", "3 months", "1 year"]
    seen = {}
    for t in instants:
        for tz in zones:
            for which in ("start", "end"):
                for iv in intervals:
                    r = client.get("/api/v1/stats/timeseries", params={which: t, "timezone": tz, "interval": iv})
                    seen[r.status_code] = seen.get(r.status_code, 0) + 1
                    assert r.status_code in (200, 422), (t, tz, which, iv, r.status_code, r.text[:300])
                r = client.get("/api/v1/stats/totals", params={which: t, "timezone": tz, "compare": "previous"})
                assert r.status_code in (200, 422), (t, tz, which, r.status_code, r.text[:300])
    assert seen.get(200) and seen.get(422), seen  # both sides of the range were exercised


def test_seed_endpoint_with_extreme_data_is_never_a_500(client, db):
    """Events at years 1 and 9999 (written past the API's age window, straight into the table):
    every seed duration still answers."""
    assert client.post("/api/events/", json={"page": "/extreme", "session_id": "x"}).status_code == 201
    db.execute("SET session_replication_role = replica")  # raw rows only: the rollups stay as they are
    try:
        for t in ("0001-01-01 00:00:00+00", "9999-12-31 23:59:59+00"):
            db.execute("INSERT INTO events (id, time, page, session_id) "
                       "VALUES (gen_random_uuid(), %s, '/extreme', 'x')", (t,))
        for d in ("1 minute", "1 hour", "7 hours", "1 day", "1 week", "1 month", "3 months", "1 year"):
            for source in ("auto", "raw"):
                r = client.get("/api/events/", params={"duration": d, "pages": "/extreme", "source": source})
                assert r.status_code == 200, (d, source, r.text[:300])
                if source == "raw":
                    years = sorted(row["bucket"][:4] for row in r.json())
                    assert years[0] == "0001" and years[-1] == "9999", (d, years)
    finally:
        db.execute("DELETE FROM events WHERE page = '/extreme' AND (time < '1900-01-01' OR time > '9000-01-01')")
        db.execute("SET session_replication_role = origin")


# -- query strings of any length ------------------------------------------------------------------
READ_ROUTES = ["/api/v1/stats/timeseries", "/api/v1/stats/breakdown", "/api/v1/stats/totals",
               "/api/events/", "/api/events/8c4f4b1e-0a5e-4d6f-9d8e-2f1c3b4a5d6e/"]
QUERIES = {
    "100 KB value": "page=" + "a" * 100_000,
    "1 MB value": "page=" + "a" * 1_000_000,
    "5000 repeated": "&".join(["page=/x"] * 5000),
    "5000 repeated pages": "&".join(["pages=/x"] * 5000),
    "20000 distinct": "&".join(f"p{i}=1" for i in range(20_000)),
    "60 KB of 2 KB values": "&".join(["page_prefix=" + "b" * 2040] * 30),
}


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """One request on its own connection; the status and the body, whatever the server does."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data, "connection dropped without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("route", READ_ROUTES)
def test_query_strings_of_any_length_are_answered(server, route):
    """From 64 KB of URL the request's head is over HTTP_MAX_HEAD_BYTES: the HTTP protocol
    (web/http.py) answers 431 in JSON before the app; below that the app answers: the caps on values (100 per filter, 2,048
    characters, unknown names) make it a 422 naming the parameter, or an answer. Never a 500,
    never a dropped connection."""
    for name, qs in QUERIES.items():
        target = f"{route}?{qs}"
        status, body = _raw_get(server.port, target)
        assert status < 500 and body, (name, status, body[:300])
        if len(target) >= 65_536:  # refused by the HTTP protocol (web/http.py), in JSON
            assert status == 431 and b'"headers_too_large"' in body, (name, status, body[:300])
        elif status >= 400:
            assert b'"detail"' in body, (name, body[:300])


# -- a server with tight read limits, and a long history of raw events ----------------------------
@pytest.fixture(scope="module")
def limited(db_url):
    """One worker; reads limited as an operator of a small instance would: a 300 ms read
    statement timeout, a pool of 4 connections, 2 long raw reads at a time, SEED_MAX_ROWS=20.
    `source` is not allowed. The schema holds BULK_EVENTS raw events over ~107 days."""
    schema = new_schema_name("hostile")
    srv = Server(db_url, schema, env={"READ_STATEMENT_TIMEOUT_MS": "300", "DB_POOL_SIZE": "4",
                                      "READ_RAW_CONCURRENCY": "2", "SEED_MAX_ROWS": str(SEED_CAP)})
    try:
        srv.start()
        with connect(db_url, schema) as conn:
            # Straight into the table, without the rollup triggers: raw history to scan.
            conn.execute("SET session_replication_role = replica")
            conn.execute("""
                INSERT INTO events (id, time, page, session_id, duration, os, browser, device)
                SELECT gen_random_uuid(), now() - interval '1 day' - i * interval '31 seconds',
                       '/bulk/' || (i %% 300), 's' || (i %% 40000), i %% 600, 'Linux', 'Firefox', 'desktop'
                FROM generate_series(1, %s) i""", (BULK_EVENTS,))
            conn.execute("SET session_replication_role = origin")
            conn.execute("ANALYZE events")
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c:
            yield srv, c
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def _expensive(i: int) -> tuple[str, dict]:
    """Questions the rollups cannot answer over the whole history: raw scans."""
    # a different start each time: distinct questions (identical ones would share one query)
    start = (datetime.now(timezone.utc) - timedelta(days=200, minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    forms = [
        ("/api/v1/stats/totals", {"metrics": ["unique_sessions", "p95_duration"], "include_bots": "true"}),
        ("/api/v1/stats/breakdown", {"group_by": "page", "metrics": ["unique_sessions", "median_duration"],
                                     "include_bots": "true", "limit": 50}),
        ("/api/v1/stats/timeseries", {"interval": "1 day", "metrics": "unique_sessions", "include_bots": "true"}),
    ]
    path, params = forms[i % len(forms)]
    return path, {**params, "start": start}


def test_expensive_reads_do_not_starve_writes(limited):
    """25 clients read raw events over 200 days, again and again, while single events are
    posted: every post is a 2xx within the writer's deadline. The reads are 200s or 503s that
    say why (too expensive / too many raw reads), never a 500 or database text."""
    srv, client = limited
    stop = threading.Event()
    reads: list[tuple[int, dict, str]] = []

    def reader(i: int) -> None:
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c:
            n = 0
            while not stop.is_set():
                path, params = _expensive(i * 1000 + n)
                r = c.get(path, params=params)
                reads.append((r.status_code, dict(r.headers), r.text[:300]))
                n += 1

    posts: list[tuple[int, float]] = []
    with ThreadPoolExecutor(25) as pool:
        futures = [pool.submit(reader, i) for i in range(25)]
        time.sleep(1.0)  # the reads pile up first
        try:
            with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=WRITE_DEADLINE_S + 20) as c:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    t0 = time.monotonic()
                    r = c.post("/api/events/", json={"page": "/during-reads", "session_id": "w"})
                    posts.append((r.status_code, time.monotonic() - t0))
                    time.sleep(0.05)
        finally:
            stop.set()
            for f in futures:
                f.result()
    assert posts and reads
    lat = sorted(t for _, t in posts)
    # Figures for the report (-s shows them); nothing here asserts a speed.
    print(f"\n[starvation] posts: {len(posts)}, 2xx {sum(200 <= s < 300 for s, _ in posts)}, "
          f"latency median {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms; reads: {len(reads)}, "
          f"200 {sum(s == 200 for s, _, _ in reads)}, query_timeout {sum('query_timeout' in t for _, _, t in reads)}, "
          f"reads_busy {sum('reads_busy' in t for _, _, t in reads)}")
    bad_posts = [(s, round(t, 2)) for s, t in posts if not (200 <= s < 300 and t < WRITE_DEADLINE_S)]
    assert not bad_posts, f"{len(bad_posts)} of {len(posts)} posts failed: {bad_posts[:10]}"
    statuses = {s for s, _, _ in reads}
    assert statuses <= {200, 503}, statuses
    refused = [(h, t) for s, h, t in reads if s == 503]
    assert refused, "no read was ever refused: the reads were not expensive"
    for headers, text in refused:
        assert "retry-after" in headers, text
        assert '"error":"query_timeout"' in text or '"error":"reads_busy"' in text, text
        assert "statement" not in text.lower() and "cancel" not in text.lower(), text  # no database text
    timeouts = [t for s, _, t in reads if s == 503 and "query_timeout" in t]
    busy = [t for s, _, t in reads if s == 503 and "reads_busy" in t]
    assert timeouts and busy, (len(timeouts), len(busy))
    assert "too expensive" in timeouts[0], timeouts[0]
    # The writer's circuit never opened.
    writer = client.get("/readyz", headers=srv.admin_headers).json()["writer"]
    assert writer["refused_unavailable"] == 0, writer


def test_source_is_an_operators_knob(limited):
    _, client = limited
    _names(client.get("/api/v1/stats/totals", params={"source": "raw"}), 422, "source")
    _names(client.get("/api/v1/stats/totals", params={"source": "auto"}), 422, "source")
    _names(client.get("/api/events/", params={"source": "raw"}), 422, "source")
    assert client.get("/api/v1/stats/totals").status_code == 200


def test_seed_answer_is_capped(limited):
    """SEED_MAX_ROWS=20: 30 one-minute buckets are a 422 naming `duration` that says what to
    ask instead; a coarser duration or fewer pages answer."""
    _, client = limited
    base = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=2)
    batch = [{"page": "/cap/a" if i % 2 else "/cap/b", "session_id": f"c{i}",
              "time": (base + timedelta(minutes=i)).isoformat()} for i in range(30)]
    r = client.post("/api/events/batch", json=batch)
    assert r.status_code in (200, 201, 207), r.text
    fine = client.get("/api/events/", params={"duration": "1 minute", "pages": ["/cap/a", "/cap/b"]})
    _names(fine, 422, "duration")
    msg = fine.json()["detail"][0]["msg"]
    assert "coarser duration" in msg and "fewer pages" in msg and str(SEED_CAP) in msg, msg
    one_page = client.get("/api/events/", params={"duration": "1 minute", "pages": "/cap/a"})
    assert one_page.status_code == 200 and len(one_page.json()) == 15, one_page.text[:300]
    coarse = client.get("/api/events/", params={"duration": "1 day", "pages": ["/cap/a", "/cap/b"]})
    assert coarse.status_code == 200 and sum(row["count"] for row in coarse.json()) == 30, coarse.text[:300]


# -- single flight and the cache's byte bound ------------------------------------------------------
def _rollup_tables(db) -> list[str]:
    rows = db.execute("""SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
                         AND (tablename = 'events' OR tablename LIKE 'rollup%%')
                         AND tablename <> 'rollup_meta'""").fetchall()
    return [r[0] for r in rows]


def test_identical_questions_in_flight_are_one_query(server, db_url, schema, db):
    """8 identical questions arrive while the tables they read are locked: one query waits on
    the lock (pg_blocking_pids), the other 7 wait for its answer (X-Cache: shared)."""
    tables = _rollup_tables(db)
    params = {"metrics": ["events", "avg_duration"], "start": "2031-03-01T00:00:00Z",
              "end": "2031-03-08T00:00:00Z"}
    locker = connect(db_url, schema)  # autocommit: BEGIN and ROLLBACK by hand
    try:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE " + ", ".join(f'"{t}"' for t in tables) + " IN ACCESS EXCLUSIVE MODE")
        me = locker.execute("SELECT pg_backend_pid()").fetchone()[0]

        def waiting() -> int:
            return db.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                              (me,)).fetchone()[0]

        def ask(_):
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
                return c.get("/api/v1/stats/totals", params=params)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, i) for i in range(8)]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not waiting():
                time.sleep(0.05)
            time.sleep(1.0)  # every request has arrived by now (they are on the loopback)
            blocked = waiting()
            locker.execute("ROLLBACK")  # let the query through
            answers = [f.result() for f in futures]
    finally:
        locker.close()
    assert blocked == 1, f"{blocked} queries waited for the same answer"
    assert all(r.status_code == 200 for r in answers), [r.text[:200] for r in answers]
    assert len({r.content for r in answers}) == 1
    how = sorted(r.headers["x-cache"] for r in answers)
    # One query; the others shared it (a request slower to arrive than the 1 s allowed would find
    # the answer in the cache: a hit, still no query of its own).
    assert how.count("miss") == 1 and how.count("shared") >= 1 and set(how) <= {"miss", "shared", "hit"}, how


def test_cache_is_bounded_in_bytes():
    from analytics.aggregation.cache import AnswerCache

    cache = AnswerCache(ttl=60, max_bytes=64 * 1024)
    for i in range(100):
        cache.put(("q", i), bytes(10 * 1024))
        assert cache.bytes <= 64 * 1024
    assert cache.get(("q", 99)) is not None and cache.get(("q", 0)) is None  # least recent went first
    assert len(cache) < 7
    cache.put(("big",), bytes(65 * 1024))  # bigger than the whole budget: never cached
    assert cache.get(("big",)) is None and cache.get(("q", 99)) is not None
    # A key is charged too: 100 filter values of 2 KB make a key of 200 KB.
    cache.put(("k", ("x" * 2048,) * 100), b"{}")
    assert cache.get(("k", ("x" * 2048,) * 100)) is None and cache.bytes <= 64 * 1024


def test_read_pool_exhausted_is_that_reads_503_not_the_writers(db_url):
    """One read connection (DB_POOL_SIZE=1), held by a read that waits on a lock: the next read
    waits DB_TIMEOUT (1 s) for a connection, then is a 503 `reads_busy`; events are still
    written meanwhile (the writer's own connections), and its circuit never opens."""
    schema = new_schema_name("readpool")
    srv = Server(db_url, schema, env={"DB_POOL_SIZE": "1", "DB_TIMEOUT": "1"})
    try:
        srv.start()
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c, connect(db_url, schema) as locker:
            locker.execute("BEGIN")
            # The readiness of the rollups is the first thing a worker's first read reads.
            locker.execute("LOCK TABLE rollup_meta IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(c.get, "/api/v1/stats/totals")
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not locker.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                        ).fetchone()[0]:
                    time.sleep(0.05)
                with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as other:
                    busy = other.get("/api/v1/stats/breakdown", params={"group_by": "page"})
                    posts = [other.post("/api/events/", json={"page": "/pool", "session_id": "p"}) for _ in range(5)]
                locker.execute("ROLLBACK")
                assert held.result().status_code == 200
        assert busy.status_code == 503 and busy.json()["error"] == "reads_busy", busy.text
        assert "retry-after" in busy.headers
        assert [p.status_code for p in posts] == [201] * 5, [p.text for p in posts]
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
            assert c.get("/readyz", headers=srv.admin_headers).json()["writer"]["refused_unavailable"] == 0
    finally:
        srv.stop()
        drop_schema(db_url, schema)


# -- questions the database refuses as too complex -----------------------------------------------
def test_group_by_items_are_capped(client):
    """Every group_by item is a column of the query: hundreds of `prop:` keys cost the database
    seconds (and ~1,700 are refused by it). Past MAX_GROUP_BY (8) it is a 422 naming group_by,
    on both paths; 8 are answered."""
    many = [("group_by", "page")] + [("group_by", f"prop:k{i}") for i in range(8)]
    for route in ("/api/v1/stats/breakdown", "/api/v1/stats/timeseries", "/api/v1/stats/totals"):
        _names(client.get(route, params=many), 422, "group_by")
        assert client.get(route, params=many[:8]).status_code == 200


def test_a_read_the_database_refuses_is_a_422_not_an_outage(db_url):
    """SQLSTATE class 54 on a read (here: more columns than a target list may hold) is the
    question's fault: db.connection lets it through as itself, not as DatabaseUnavailable (which
    would also take a replica out of rotation), and the app answers it 422 query_too_complex."""
    import asyncio

    import psycopg
    from fastapi import FastAPI

    from analytics.config import Settings
    from analytics.db import connection, make_pool
    from analytics.web import errors

    async def read_too_wide() -> BaseException | None:
        pool = make_pool(Settings(), url=db_url, name="reader")
        await pool.open()
        try:
            async with connection(pool) as conn:
                await conn.execute("SELECT " + ", ".join(f"{i} AS c{i}" for i in range(1700)))
        except Exception as exc:  # noqa: BLE001 - what it is, is the point
            return exc
        finally:
            await pool.close()
        return None

    exc = asyncio.run(read_too_wide())
    assert isinstance(exc, psycopg.OperationalError) and exc.sqlstate == "54011", repr(exc)

    app = FastAPI()
    errors.install(app)

    @app.get("/wide")
    async def wide():
        raise exc

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/wide")

    r = asyncio.run(ask())
    assert r.status_code == 422 and r.json()["error"] == "query_too_complex", r.text


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules"])
def test_names_in_the_tz_database_that_are_not_zones_are_422(client, zone):
    """`localtime` is whatever the server's /etc/localtime says, `Factory` a placeholder: not
    zones a question can mean (and not in the schema's enum)."""
    _names(client.get("/api/v1/stats/totals", params={"timezone": zone}), 422, "timezone")
