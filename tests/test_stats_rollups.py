"""Rollups never disagree with raw events.

Events arrive in concurrent batches (sessions split across them, so concurrent writers meet on
the same session rows), then many random queries (ranges, intervals, zones, groups, filters,
metrics, paging) are answered twice, by the planner and with source=raw, and must be identical.
Then: a full rebuild reproduces exactly the rollups built at ingest, and a bulk load straight
into the table is invisible to rollups until the documented ranged rebuild."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

import stats_reference as ref
from support import ROOT, SRC, Server, connect, drop_schema, new_schema_name

pytestmark = pytest.mark.both_paths

UTC = timezone.utc
YEAR = datetime.now(UTC).year - 1
DAY = timedelta(days=1)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"]
INTERVALS = ["1 minute", "5 minutes", "15 minutes", "30 minutes", "45 minutes", "1 hour", "2 hours",
             "3 hours", "7 hours", "1 day", "2 days", "1 week", "1 month"]
METRICS = ["events", "unique_sessions", "unique_visitors", "avg_duration", "median_duration", "p95_duration"]
OLD_DIMS = ["page", "os", "browser", "device", "referrer"]
DIMS = OLD_DIMS + ["name", "hostname", "country", "utm_source", "utm_medium", "utm_campaign"]  # issue 11 part 1
SPAN = (datetime(YEAR, 3, 1, tzinfo=UTC), datetime(YEAR, 4, 20, tzinfo=UTC))


@pytest.fixture(scope="module")
def env(db_url, api_mode):
    schema = new_schema_name("rollups")
    srv = Server(db_url, schema, workers=2,
                 env={"MAX_EVENT_AGE_DAYS": "800", "STATS_CACHE_TTL_SECONDS": "0",
                      "FAST_PATHS": str(api_mode == "fast").lower(),
                      "STATS_ALLOW_RAW_SOURCE": "true",
                      # each batch comes from its own address (X-Forwarded-For, believed from
                      # this trusted peer): many visitors, each spread over the whole span
                      "TRUSTED_PROXIES": "127.0.0.1"}).start()
    try:
        rng = random.Random(2024)
        events = ref.make_events(rng, [SPAN], 6000, sessions=400, fields=True)
        rng.shuffle(events)  # a session's events land in different, concurrent batches
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=120) as client:
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda i: ref.post_batches(client, events[i:i + 150], headers={
                    "X-Forwarded-For": f"198.51.100.{i // 150}"}), range(0, len(events), 150)))
            conn = connect(db_url, schema)
            yield {"client": client, "conn": conn, "schema": schema, "db_url": db_url,
                   "events": ref.stored_events(conn)}
            conn.close()
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def _z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def random_query(rng: random.Random, events) -> tuple[str, dict]:
    kind = rng.choice(["timeseries", "timeseries", "breakdown", "totals"])
    unit = rng.choice([timedelta(minutes=1), timedelta(minutes=15), timedelta(hours=1), DAY, DAY])
    start = SPAN[0] + unit * rng.randrange(int((SPAN[1] - SPAN[0]) / unit))
    if rng.random() < 0.15:
        start += timedelta(seconds=rng.randrange(3600))  # unaligned: raw slivers at the edges
    end = min(SPAN[1] + 2 * DAY, start + unit * rng.randint(1, 40 if unit < DAY else 30))
    params: dict = {"start": _z(start), "end": _z(end), "timezone": rng.choice(ZONES),
                    "metrics": rng.sample(METRICS, rng.randint(1, 3))}
    if rng.random() < 0.3:  # issue 11 part 1 (added to the sample, not to METRICS: same odds for the others)
        params["metrics"].append("pageviews")
    if kind == "timeseries":
        params["interval"] = rng.choice(INTERVALS)
    if kind != "totals" or rng.random() < 0.3:
        params["group_by"] = rng.sample(rng.choice([OLD_DIMS, DIMS]), max(kind == "breakdown", rng.choice([0, 1, 1, 1, 2])))
    sample = rng.choice(events)
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
        name = rng.choice(["page", "page_prefix", *rng.choice([OLD_DIMS, DIMS])[1:]])
        if name == "page_prefix":
            params[name] = [rng.choice(["/blog", "/docs/", "/"])]
        else:
            pool = sorted({getattr(e, ref.DIM_COLUMN[name]) for e in events})
            params[name] = [getattr(sample, ref.DIM_COLUMN[name])] + rng.sample(pool, rng.choice([0, 0, 1]))
    if rng.random() < 0.15:
        params["include_bots"] = "true"
    if params.get("group_by") and kind != "totals":
        params["order_by"] = rng.choice(params["metrics"]) + rng.choice(["", ":asc", ":desc"])
        params["limit"] = rng.choice([1, 3, 10, 1000])
        params["offset"] = rng.choice([0, 0, 1, 5])
    if kind == "totals" and rng.random() < 0.3:
        params["compare"] = "previous"
    return kind, params


def test_random_queries_rollups_equal_raw(env):
    client, events = env["client"], env["events"]
    rng = random.Random(7)
    used, answered, src = {"agg": 0, "ses": 0, "vis": 0, "dur": 0}, 0, 0
    page_filter = {"rollup_agg_pagegeo_1d": 0, "rollup_agg_pageutm_1d": 0, "rollup_dur_page_1d": 0}
    for i in range(500):
        kind, params = random_query(rng, events)
        auto = client.get(f"/api/v1/stats/{kind}", params=params)
        if auto.status_code == 422:  # e.g. more buckets than allowed; checked elsewhere
            assert auto.json()["detail"][0]["loc"][1] in ("interval", "limit"), auto.text
            continue
        raw = client.get(f"/api/v1/stats/{kind}", params={**params, "source": "raw"})
        assert auto.status_code == raw.status_code == 200, (params, auto.text, raw.text)
        a, r = auto.json(), raw.json()
        assert r["meta"]["source"] == "raw"
        assert a["results"] == r["results"], (kind, params, a["meta"])
        assert a["meta"].get("total_groups") == r["meta"].get("total_groups"), params
        answered += 1
        for metric, source in a["meta"]["sources"].items():
            kind_of = {"unique_sessions": "ses", "unique_visitors": "vis", "median_duration": "dur",
                       "p95_duration": "dur"}.get(metric, "agg")
            if "rollup_" in source:
                used[kind_of] += 1
            if any(f"rollup_agg_{f}_" in source for f in ("evt", "geo", "utm", "src")):
                src += 1
            for table in page_filter:
                page_filter[table] += table in source
    # The comparison only means something if rollups actually answered most of it.
    assert answered >= 200 and used["agg"] >= 100 and used["ses"] >= 10 and used["dur"] >= 10, (answered, used)
    assert used["vis"] >= 10, used
    assert src >= 5, src  # the issue 11 families (name, hostname, country, utm_*) answered some
    assert sum(page_filter.values()) >= 1, page_filter  # more of them: the next test


def test_the_dashboard_filtered_by_a_page_reads_the_page_rollups_and_equals_raw(env):
    """Revision 0012: what the dashboard asks under a page filter (the country, event-name and
    UTM-source panels, the median time on page, also by day) is answered from the page-filter
    families, in several zones and over unaligned ranges, and equals the raw answer."""
    client, events = env["client"], env["events"]
    pages = [p for p, _ in Counter(e.page for e in events).most_common(3)]
    rng = random.Random(12)
    used: Counter = Counter()
    for page in pages:
        for zone in ("UTC", "America/New_York", "Asia/Kathmandu"):
            start = SPAN[0] + timedelta(days=rng.randrange(5), hours=rng.randrange(24))
            end = start + timedelta(days=rng.randrange(20, 40), minutes=rng.randrange(0, 24 * 60, 15))
            base = {"start": _z(start), "end": _z(end), "timezone": zone, "page": page}
            questions = [("breakdown", {**base, "group_by": d, "metrics": "events", "limit": 10})
                         for d in ("country", "name", "utm_source")]
            questions += [("totals", {**base, "metrics": ["median_duration", "p95_duration"], "compare": "previous"}),
                          ("timeseries", {**base, "interval": "1 day", "metrics": "median_duration"})]
            for kind, params in questions:
                auto = client.get(f"/api/v1/stats/{kind}", params=params)
                raw = client.get(f"/api/v1/stats/{kind}", params={**params, "source": "raw"})
                assert auto.status_code == raw.status_code == 200, (params, auto.text)
                assert auto.json()["results"] == raw.json()["results"], (kind, params, auto.json()["meta"])
                used.update(t for t in ("pagegeo", "pageutm", "dur_page") if t in auto.json()["meta"]["source"])
    assert used["pagegeo"] >= 12 and used["pageutm"] >= 6 and used["dur_page"] >= 12, used


def _snapshot(conn) -> dict[str, list]:
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'rollup\\_%%\\_%%' "
        "AND tablename <> 'rollup_meta' ORDER BY 1")]
    out = {}
    for t in tables:
        where = "WHERE n <> 0" if "_ses_" in t or "_vis_" in t else ""  # moved first-seen transitions leave zero rows
        if t.startswith("rollup_visit_"):
            where = "WHERE visits <> 0"  # visits merged into others leave zero rows
        out[t] = [r[0] for r in conn.execute(f'SELECT r::text FROM "{t}" r {where} ORDER BY 1')]
    out["rollup_sessions"] = sorted(
        (sid, sorted(entries)) for sid, entries in conn.execute("SELECT session_id, entries FROM rollup_sessions"))
    out["rollup_visitors"] = sorted(
        (vid, sorted(entries)) for vid, entries in conn.execute("SELECT visitor_id, entries FROM rollup_visitors"))
    return out


def _rebuild(env, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "analytics.rollups", "rebuild", *args], cwd=ROOT,
                         env={**os.environ, "DATABASE_URL": env["db_url"], "DB_SCHEMA": env["schema"],
                              "PYTHONPATH": str(SRC)}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_full_rebuild_reproduces_ingest_rollups(env):
    before = _snapshot(env["conn"])
    assert len(before) >= 20 and sum(len(v) for v in before.values()) > 10_000
    out = _rebuild(env)
    assert "rebuilt rollups (everything)" in out and "rollup_agg_page_1d" in out
    assert _snapshot(env["conn"]) == before


def test_bulk_load_needs_the_ranged_rebuild(env):
    client, conn = env["client"], env["conn"]
    day = datetime(YEAR, 4, 2, tzinfo=UTC)
    conn.execute("""INSERT INTO events (id, time, page, session_id, duration, os, browser, device, referrer_host)
                    SELECT gen_random_uuid(), %s + g * interval '7 minutes', '/bulk', 'bulk-' || (g %% 9), g,
                           'Linux', 'Firefox', 'desktop', ''
                    FROM generate_series(0, 199) AS g""", (day,))
    params = {"start": _z(day - DAY), "end": _z(day + 2 * DAY), "group_by": "page", "limit": 100,
              "metrics": ["events", "unique_sessions", "median_duration"]}
    stale = client.get("/api/v1/stats/breakdown", params=params).json()
    raw = client.get("/api/v1/stats/breakdown", params={**params, "source": "raw"}).json()
    assert "rollup_" in stale["meta"]["source"]
    assert stale["results"] != raw["results"]  # the rollups did not see the bulk load...
    out = _rebuild(env, "--start", _z(day), "--end", _z(day + DAY))
    assert f"{YEAR}-04-02T00:00:00+00:00 .. {YEAR}-04-03T00:00:00+00:00" in out
    fresh = client.get("/api/v1/stats/breakdown", params=params).json()
    assert fresh["results"] == raw["results"]  # ...until the ranged rebuild
    assert {r["page"]: r["unique_sessions"] for r in fresh["results"]}["/bulk"] == 9
    # and a full rebuild agrees with what ingest + ranged rebuild produced
    before = _snapshot(conn)
    _rebuild(env)
    assert _snapshot(conn) == before


def test_ranged_rebuild_leaves_a_new_table_not_ready(env):
    """A rollup added to a database that already has events holds nothing until a full rebuild;
    a ranged rebuild fills only its range, so readers must keep ignoring the table."""
    conn, table = env["conn"], "rollup_agg_total_5m"
    conn.execute("UPDATE rollup_meta SET ready = false WHERE name = %s", (table,))
    conn.execute(f"TRUNCATE {table}")
    day = datetime(YEAR, 4, 3, tzinfo=UTC)
    out = _rebuild(env, "--start", _z(day), "--end", _z(day + DAY))
    assert "not ready" in out and table in out
    assert conn.execute("SELECT ready FROM rollup_meta WHERE name = %s", (table,)).fetchone() == (False,)
    out = _rebuild(env)
    assert "not ready" not in out
    assert conn.execute("SELECT ready FROM rollup_meta WHERE name = %s", (table,)).fetchone() == (True,)


def test_rebuild_missing_fills_only_the_tables_that_are_not_ready(env):
    """After an upgrade that adds rollups to a database with events (revision 0012 added the
    page-filter families), `rebuild --missing` fills those tables, and only those, with what a
    full rebuild would put there; until then readers answer from raw events."""
    client, conn = env["client"], env["conn"]
    before = _snapshot(conn)
    new = ("rollup_agg_pagegeo_1d", "rollup_dur_page_1d")
    for table in new:
        conn.execute("UPDATE rollup_meta SET ready = false WHERE name = %s", (table,))
        conn.execute(f"TRUNCATE {table}")
    page = Counter(e.page for e in env["events"]).most_common(1)[0][0]
    base = {"start": _z(SPAN[0]), "end": _z(SPAN[1]), "page": page}
    questions = (("breakdown", {**base, "group_by": "country", "metrics": "events", "limit": 100}, "rollup_agg_pagegeo_1d"),
                 ("totals", {**base, "metrics": "median_duration"}, "rollup_dur_page_1d"))

    def sources() -> set[str]:
        return {client.get(f"/api/v1/stats/{kind}", params=p).json()["meta"]["source"] for kind, p, _ in questions}

    # each worker re-reads which tables are ready every few seconds: wait until both have
    for _ in range(100):
        if sources() == {"raw"}:
            break
        time.sleep(0.1)
    assert sources() == {"raw"}
    untouched = conn.execute("SELECT count(*), max(xmin::text::bigint) FROM rollup_agg_all_1d").fetchone()
    out = _rebuild(env, "--missing")
    assert "filled 2 rollup table(s)" in out and all(t in out for t in new), out
    assert _snapshot(conn) == before
    assert conn.execute("SELECT count(*), max(xmin::text::bigint) FROM rollup_agg_all_1d").fetchone() == untouched
    assert set(new) <= {r[0] for r in conn.execute("SELECT name FROM rollup_meta WHERE ready")}
    for _ in range(100):
        if sources() == set(new):
            break
        time.sleep(0.1)
    for kind, params, table in questions:
        answer = client.get(f"/api/v1/stats/{kind}", params=params).json()
        assert answer["meta"]["source"] == table, answer["meta"]
        raw = client.get(f"/api/v1/stats/{kind}", params={**params, "source": "raw"}).json()
        assert answer["results"] == raw["results"] and answer["results"], (kind, answer["results"])
    assert "no rollup table to fill" in _rebuild(env, "--missing")


def test_ranged_rebuild_after_deleting_events(env):
    """A repair that deletes events: the ranged rebuild of their day recomputes the sessions
    they belonged to (one left without any event loses its state) and leaves exactly what a
    full rebuild leaves."""
    client, conn = env["client"], env["conn"]
    day = datetime(YEAR, 3, 15, tzinfo=UTC)
    gone = f"gone-{uuid.uuid4().hex[:6]}"
    ref.post_batches(client, [{"page": "/gone", "time": _z(day + timedelta(hours=h)), "session_id": gone}
                              for h in (1, 2, 3)])
    assert conn.execute("SELECT count(*) FROM rollup_sessions WHERE session_id = %s", (gone,)).fetchone() == (1,)
    (partial,) = conn.execute("""SELECT count(DISTINCT session_id) FROM events
        WHERE time >= %s AND time < %s AND session_id LIKE '%%1'""", (day, day + DAY)).fetchone()
    assert partial > 0
    conn.execute("""DELETE FROM events WHERE time >= %s AND time < %s
                    AND (session_id = %s OR session_id LIKE '%%1')""", (day, day + DAY, gone))
    _rebuild(env, "--start", _z(day + timedelta(hours=5)), "--end", _z(day + timedelta(hours=6)))
    assert conn.execute("SELECT count(*) FROM rollup_sessions WHERE session_id = %s", (gone,)).fetchone() == (0,)
    params = {"start": _z(day - DAY), "end": _z(day + 2 * DAY), "group_by": "page", "limit": 1000,
              "metrics": ["events", "unique_sessions", "median_duration"]}
    assert (client.get("/api/v1/stats/breakdown", params=params).json()["results"]
            == client.get("/api/v1/stats/breakdown", params={**params, "source": "raw"}).json()["results"])
    after_ranged = _snapshot(conn)
    _rebuild(env)
    assert _snapshot(conn) == after_ranged


def test_events_posted_now_are_in_rollups_at_once(env):
    """The hook runs in the insert's own statement: no refresh lag, no window of disagreement."""
    client = env["client"]
    t = datetime(YEAR, 4, 10, 12, 0, tzinfo=UTC)
    params = {"start": _z(t), "end": _z(t + timedelta(hours=1)), "metrics": ["events", "unique_sessions"],
              "group_by": "page", "limit": 100}
    before = client.get("/api/v1/stats/totals", params=params).json()["results"]
    sid = f"late-{uuid.uuid4().hex[:6]}"
    ref.post_batches(client, [{"page": "/late", "time": _z(t + timedelta(minutes=m)), "session_id": sid}
                              for m in (1, 2, 40)])
    after = client.get("/api/v1/stats/totals", params=params)
    assert "rollup_" in after.json()["meta"]["source"]
    rows = {r["page"]: r for r in after.json()["results"]}
    assert rows["/late"]["events"] == 3 and rows["/late"]["unique_sessions"] == 1
    assert len(after.json()["results"]) == len(before) + 1


def test_unique_visitors_is_count_distinct_visitor_id_of_raw_events(env):
    """unique_visitors (from the vis rollups) is exactly count(DISTINCT visitor_id) of the human
    events in the range, per day and over many days (ids rotate daily: a sum of daily uniques)."""
    client, conn = env["client"], env["conn"]
    start, end = datetime(YEAR, 3, 3, tzinfo=UTC), datetime(YEAR, 4, 3, tzinfo=UTC)
    (raw,) = conn.execute("SELECT count(DISTINCT visitor_id) FROM events WHERE NOT is_bot "
                          "AND time >= %s AND time < %s", (start, end)).fetchone()
    assert raw > 100  # many visitors, or the comparison means little
    r = client.get("/api/v1/stats/totals", params={"start": _z(start), "end": _z(end),
                                                   "metrics": ["unique_visitors"]}).json()
    assert r["meta"]["sources"]["unique_visitors"].startswith("rollup_vis_"), r["meta"]
    assert "sum of daily uniques" in r["meta"]["unique_visitors"]
    assert r["results"][0]["unique_visitors"] == raw
    daily = dict(conn.execute("""SELECT to_char(time_bucket('1 day', time), 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
            count(DISTINCT visitor_id) FROM events WHERE NOT is_bot AND time >= %s AND time < %s GROUP BY 1""",
                              (start, end)).fetchall())
    ts = client.get("/api/v1/stats/timeseries", params={"start": _z(start), "end": _z(end), "interval": "day",
                                                        "metrics": ["unique_visitors"]}).json()
    got = {row["bucket"]: row["unique_visitors"] for row in ts["results"] if row["unique_visitors"]}
    assert got == daily
