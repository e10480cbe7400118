"""Visits maintained at ingest equal a Python model computed from the raw events.

Random visitors (client address x user agent, through X-Forwarded-For from a trusted peer) send
pageviews whose gaps sit around the 30-minute timeout (below, exactly at, just above, far
above), shuffled (out-of-order arrival), with resent duplicates of the same (id, time), as
batches and single events, from two concurrent clients of the real server. Then engagement
beacons and custom events for the same visitors (this branch's ingest names every event a
pageview, so those go in through SQL running the real ingest hook statement), some of them
bridging two visits. Then:
- the `visits` table equals the model's visits, row for row;
- the API's visits / views_per_visit / bounce_rate / visit_duration / median_visit_duration,
  totals (with compare=previous), entry/exit page breakdowns and a timeseries in a non-UTC zone
  equal the model's;
- a full and a ranged `python -m analytics rollups rebuild` reproduce the same table;
- the refusals of combinations visits cannot answer are 422s naming the parameter.
"""
from __future__ import annotations

import math
import os
import random
import statistics
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest

from analytics.ingestion.repository import hook_ctes
from analytics.rollups.maintain import ingest_statements as rollup_ingest_statements
from analytics.rollups.visits import ROLLUPS as VISIT_ROLLUPS, ingest_hook as visits_ingest_hook
from support import ROOT, SRC, Server, connect, drop_schema, new_schema_name

UTC = timezone.utc
TIMEOUT = timedelta(minutes=30)
PAGES = ["/", "/a", "/b", "/pricing", "/docs"]
UAS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
       "Version/17.0 Mobile/15E148 Safari/604.1"]
GAPS = [0, 5, 60, 600, 1799, 1800, 1801, 1900, 7200, 30000]   # seconds between a visitor's events
NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(days=5)
VISIT_METRICS = ["visits", "views_per_visit", "bounce_rate", "visit_duration", "median_visit_duration"]


@dataclass(frozen=True)
class Ev:
    visitor_id: int | None
    time: datetime
    id: uuid.UUID
    name: str
    page: str
    os: str
    browser: str
    device: str
    referrer_host: str
    is_bot: bool


def model_visits(events: list[Ev]) -> list[tuple]:
    """Rows shaped like the `visits` table, from raw events: human events with a visitor id."""
    by: dict[int, list[Ev]] = {}
    for e in events:
        if e.visitor_id is not None and not e.is_bot:
            by.setdefault(e.visitor_id, []).append(e)
    out = []
    for vid, evs in by.items():
        evs.sort(key=lambda e: (e.time, e.id))
        runs = [[evs[0]]]
        for e in evs[1:]:
            if e.time - runs[-1][-1].time > TIMEOUT:
                runs.append([e])
            else:
                runs[-1].append(e)
        for r in runs:
            pvs = [e for e in r if e.name == "pageview"]
            first = r[0]
            entry, exit_ = (pvs[0], pvs[-1]) if pvs else (None, None)
            out.append((vid, r[0].time, r[-1].time, first.id, len(pvs), len(r),
                        sum(e.name not in ("pageview", "engagement") for e in r),
                        entry and entry.time, entry and entry.id, entry.page if entry else "",
                        exit_ and exit_.time, exit_ and exit_.id, exit_.page if exit_ else "",
                        first.os, first.browser, first.device, first.referrer_host))
    return sorted(out, key=_key)


def _key(v: tuple):
    return (v[0], v[1], v[3])


def stored_visits(conn) -> list[tuple]:
    return sorted((tuple(r) for r in conn.execute("SELECT * FROM visits")), key=_key)


def stored_events(conn) -> list[Ev]:
    return [Ev(*r) for r in conn.execute(
        "SELECT visitor_id, time, id, name, page, os, browser, device, referrer_host, is_bot FROM events")]


def metrics_of(visits: list[tuple]) -> dict:
    n = len(visits)
    secs = [(v[2] - v[1]).total_seconds() for v in visits]
    return {"visits": n,
            "views_per_visit": sum(v[4] for v in visits) / n if n else None,
            "bounce_rate": sum(v[4] == 1 and v[6] == 0 for v in visits) / n if n else None,
            "visit_duration": sum(secs) / n if n else None,
            "median_visit_duration": statistics.median(secs) if n else None}


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def assert_metrics(got: dict, want: dict) -> None:
    for k, w in want.items():
        assert close(got[k], w), (k, got[k], w)


def make_pageviews(rng: random.Random) -> list[tuple[dict, str]]:
    """(payload, X-Forwarded-For) of pageviews: 16 visitors (8 addresses x 2 user agents)."""
    out = []
    for v in range(16):
        ip, ua = f"203.0.113.{v // 2 + 1}", UAS[v % 2]
        t = BASE + timedelta(seconds=rng.randrange(86400 * 3))
        for k in range(rng.randint(1, 25)):
            if k:
                t += timedelta(seconds=rng.choice(GAPS))
            out.append(({"id": str(uuid.UUID(int=rng.getrandbits(128))), "time": t.isoformat(),
                         "page": rng.choice(PAGES), "user_agent": ua,
                         "referrer": rng.choice(["", "https://www.example.org/x", "https://news.site/y"]),
                         "session_id": f"s{v}"}, ip))
    return out


def send(client: httpx.Client, rng: random.Random, items: list[tuple[dict, str]]) -> None:
    """Batches of one address (the batch's sender) and single events."""
    i = 0
    while i < len(items):
        ip = items[i][1]
        n = 1
        while i + n < len(items) and items[i + n][1] == ip and n < rng.choice([1, 3, 20]):
            n += 1
        chunk = [p for p, _ in items[i:i + n]]
        headers = {"X-Forwarded-For": ip}
        if n == 1 and rng.random() < 0.5:
            r = client.post("/api/events/", json=chunk[0], headers=headers)
        else:
            r = client.post("/api/events/batch", json=chunk, headers=headers)
        assert r.status_code in (200, 201), r.text
        i += n


def insert_named(conn, rows: list[Ev]) -> None:
    """Events with other names, stored with every hook ingest runs (the rollups' and visits'), so
    the stored state is what ingest would leave: the stats' event rows come from the rollups and
    drive the rows visits are joined to (aggregation/planner.py plan())."""
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params = [x for e in rows for x in (e.id, e.time, e.page, e.name, e.os, e.browser, e.device,
                                        e.referrer_host, e.visitor_id, e.is_bot)]
    # the hooks rollups.install() registers, composed as the writer composes them
    ctes = [c.as_string(conn) for c in hook_ctes([rollup_ingest_statements, visits_ingest_hook])]
    conn.execute(f"""WITH ins AS (INSERT INTO events (id, time, page, name, os, browser, device, referrer_host,
                                                     visitor_id, is_bot)
                                 VALUES {values} RETURNING *),
                      {", ".join(ctes)}
                 SELECT 1""", params)
    conn.commit()


@pytest.fixture(scope="module")
def env(db_url):
    schema = new_schema_name("visits")
    srv = Server(db_url, schema, workers=2,
                 env={"MAX_EVENT_AGE_DAYS": "30", "STATS_CACHE_TTL_SECONDS": "0",
                      "TRUSTED_PROXIES": "127.0.0.1"}).start()
    try:
        rng = random.Random(11)
        items = make_pageviews(rng)
        items += rng.sample(items, len(items) // 10)  # resent: duplicates of the same (id, time)
        rng.shuffle(items)  # out of order
        items.sort(key=lambda x: x[1])  # grouped by address (a batch has one sender) ...
        halves = [items[0::2], items[1::2]]  # ... split over two concurrent clients
        for h in halves:
            rng.shuffle(h)
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as client:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda h: send(client, random.Random(len(h)), h), halves))
            conn = connect(db_url, schema)
            # engagement beacons and custom events for the same visitors, near their pageviews
            stored = stored_events(conn)
            extra = []
            for e in rng.sample(stored, len(stored) // 3):
                name = rng.choice(["engagement", "engagement", "signup", "download"])
                extra.append(Ev(e.visitor_id, e.time + timedelta(seconds=rng.choice([0, 40, 1700, 1799, 1800, 2400])),
                                uuid.UUID(int=rng.getrandbits(128)), name, e.page, e.os, e.browser, e.device,
                                e.referrer_host, False))
            rng.shuffle(extra)
            for i in range(0, len(extra), 7):
                insert_named(conn, extra[i:i + 7])
            yield {"client": client, "conn": conn, "schema": schema, "db_url": db_url, "srv": srv,
                   "events": stored_events(conn)}
            conn.close()
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def get(client, kind: str, **params) -> dict:
    r = client.get(f"/api/v1/stats/{kind}", params={k: v for k, v in params.items() if v is not None})
    assert r.status_code == 200, r.text
    return r.json()


def _z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def assert_rollups_follow_visits(conn) -> None:
    """Each visit rollup's non-zero rows are exactly the visits table summed by its buckets."""
    for table, width, dim in VISIT_ROLLUPS:
        d = f", {dim}" if dim else ""
        want = conn.execute(f"""SELECT time_bucket('{width} seconds'::interval, started){d}, count(*),
                sum(pageviews), count(*) FILTER (WHERE pageviews = 1 AND interactions = 0),
                sum((extract(epoch FROM ended - started) * 1000000)::bigint)
            FROM visits GROUP BY 1{', 2' if dim else ''} ORDER BY 1{', 2' if dim else ''}""").fetchall()
        got = conn.execute(f"SELECT bucket{d}, visits, pageviews, bounces, dur_us FROM {table} "
                           f"WHERE visits <> 0 ORDER BY 1{', 2' if dim else ''}").fetchall()
        assert [tuple(r) for r in got] == [tuple(r) for r in want], table
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE visits = 0 AND "
                            "(pageviews, bounces, dur_us) <> (0, 0, 0)").fetchone()[0] == 0


def test_ingest_maintained_visits_equal_the_model(env):
    assert_rollups_follow_visits(env["conn"])
    want = model_visits(env["events"])
    assert len(want) > 30
    assert any(v[4] == 1 and v[6] == 0 for v in want) and any(v[4] > 1 for v in want)
    assert any(v[6] > 0 for v in want)  # visits with an interaction
    assert stored_visits(env["conn"]) == want


def test_totals_and_compare_equal_the_model(env):
    visits = model_visits(env["events"])
    start, end = BASE + timedelta(days=1), BASE + timedelta(days=3, hours=5)
    body = get(env["client"], "totals", metrics=["events", *VISIT_METRICS], start=_z(start), end=_z(end),
               compare="previous")
    (row,) = body["results"]
    assert_metrics(row, metrics_of([v for v in visits if start <= v[1] < end]))
    prev = start - (end - start)
    assert_metrics(row["previous"], metrics_of([v for v in visits if prev <= v[1] < start]))
    events_only = get(env["client"], "totals", metrics=["events"], start=_z(start), end=_z(end))
    assert row["events"] == events_only["results"][0]["events"]


@pytest.mark.parametrize("dim,col", [("entry_page", 9), ("exit_page", 12), ("referrer", 16), ("device", 15)])
def test_breakdowns_equal_the_model(env, dim, col):
    visits = model_visits(env["events"])
    start, end = BASE - timedelta(days=1), NOW
    body = get(env["client"], "breakdown", group_by=[dim], metrics=VISIT_METRICS, start=_z(start), end=_z(end),
               limit=100)
    groups: dict[str, list] = {}
    for v in visits:
        groups.setdefault(v[col], []).append(v)
    got = {r[dim]: r for r in body["results"]}
    assert set(got) == set(groups)
    for k, vs in groups.items():
        assert_metrics(got[k], metrics_of(vs))


def test_filters_equal_the_model(env):
    visits = model_visits(env["events"])
    start, end = BASE - timedelta(days=1), NOW
    body = get(env["client"], "totals", metrics=VISIT_METRICS, start=_z(start), end=_z(end),
               entry_page=["/a", "/b"], device="mobile")
    want = [v for v in visits if v[9] in ("/a", "/b") and v[15] == "mobile"]
    assert want
    assert_metrics(body["results"][0], metrics_of(want))


def test_timeseries_in_a_non_utc_zone_equals_the_model(env):
    tz = ZoneInfo("Asia/Kathmandu")  # +05:45
    visits = model_visits(env["events"])
    start = BASE.astimezone(tz).replace(hour=0, minute=0, second=0).astimezone(UTC)
    end = start + timedelta(days=5)
    body = get(env["client"], "timeseries", metrics=["events", "visits", "bounce_rate", "visit_duration"],
               interval="6 hours", timezone=tz.key, start=_z(start), end=_z(end))
    rows = body["results"]
    edges = [datetime.fromisoformat(r["bucket"]) for r in rows] + [end]
    assert edges[0] == start and len(rows) == 20
    total = 0
    for r, lo, hi in zip(rows, edges, edges[1:]):
        sel = [v for v in visits if max(lo, start) <= v[1] < hi]
        total += len(sel)
        m = metrics_of(sel)
        # the event rows drive the rows visits join to: both from the same stored state
        assert r["events"] == sum(not e.is_bot and max(lo, start) <= e.time < hi for e in env["events"]), (r, lo)
        assert r["visits"] == m["visits"], (r, lo)
        for k in ("bounce_rate", "visit_duration"):
            assert close(r[k], m[k]) or (r[k] is None and m[k] is None), (k, r, m)
    assert total > 20


ROLLUP_METRICS = ["visits", "views_per_visit", "bounce_rate", "visit_duration"]


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("group_by,col", [(None, None), ("entry_page", 9), ("exit_page", 12)])
def test_visit_rollups_answer_what_they_carry_and_equal_the_model(env, group_by, col):
    """Without filters, the visit metrics they carry come from the visit rollups (kept by triggers
    on `visits` through the fold's deletes and inserts, the named events' SQL hook included);
    in total, by entry or exit page, totals with compare=previous and a timeseries."""
    visits = model_visits(env["events"])
    start, end = _hour(BASE) + timedelta(hours=5), _hour(NOW) + timedelta(hours=1)
    body = get(env["client"], "breakdown" if group_by else "totals", metrics=ROLLUP_METRICS, group_by=group_by,
               start=_z(start), end=_z(end), limit=100 if group_by else None,
               compare=None if group_by else "previous")
    assert set(body["meta"]["sources"].values()) == {"rollup_visit_" + ("total_15m" if not group_by else
                                                                        group_by.split("_")[0] + "_1h")}
    inside = [v for v in visits if start <= v[1] < end]
    if group_by is None:
        (row,) = body["results"]
        assert_metrics(row, {k: v for k, v in metrics_of(inside).items() if k in ROLLUP_METRICS})
        prev = [v for v in visits if start - (end - start) <= v[1] < start]
        assert_metrics(row["previous"], {k: v for k, v in metrics_of(prev).items() if k in ROLLUP_METRICS})
    else:
        groups: dict[str, list] = {}
        for v in inside:
            groups.setdefault(v[col], []).append(v)
        got = {r[group_by]: r for r in body["results"]}
        assert set(got) == set(groups)
        for k, vs in groups.items():
            assert_metrics(got[k], {m: x for m, x in metrics_of(vs).items() if m in ROLLUP_METRICS})
    series = get(env["client"], "timeseries", metrics=["visits", "bounce_rate"], interval="1 hour",
                 start=_z(start), end=_z(end))
    assert "rollup_visit_total_15m" in series["meta"]["sources"]["visits"]
    assert sum(r["visits"] for r in series["results"]) == len(inside)
    # An edge the rollups' grain does not divide: read from the visits themselves, the same numbers.
    odd = get(env["client"], "totals", metrics=["visits"], start=_z(start + timedelta(minutes=7)), end=_z(end))
    assert odd["meta"]["sources"]["visits"] == "visits"
    assert odd["results"][0]["visits"] == len([v for v in inside if v[1] >= start + timedelta(minutes=7)])


def test_rebuild_reproduces_the_ingest_state(env):
    conn = env["conn"]
    want = stored_visits(conn)
    cmd = [sys.executable, "-m", "analytics", "rollups", "rebuild"]
    run_env = {**os.environ, "DATABASE_URL": env["db_url"], "DB_SCHEMA": env["schema"], "PYTHONPATH": str(SRC)}
    day = (BASE + timedelta(days=1)).date().isoformat()
    for extra in ([], ["--start", f"{day}T00:00:00Z", "--end", f"{day}T12:00:00Z"]):
        conn.execute("UPDATE visits SET pageviews = pageviews + 100")  # damaged: the rebuild must fix it
        conn.commit()
        r = subprocess.run(cmd + extra, env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        got = stored_visits(conn)
        assert_rollups_follow_visits(conn)
        if extra:  # ranged: the visitors with events that day are rebuilt, others keep the damage
            fixed = [v for v in got if v[4] < 100]
            assert fixed and all(v in want for v in fixed)
            conn.execute("UPDATE visits SET pageviews = pageviews - 100 WHERE pageviews >= 100")
            conn.commit()
            assert_rollups_follow_visits(conn)  # an update is a delete and an insert to them
            assert stored_visits(conn) == want
        else:
            assert got == want


def _including(visits: list[tuple], events: list[Ev], match) -> list[tuple]:
    """The visits with a human event of theirs (same visitor, within the visit) matching `match`."""
    by: dict[int, list[Ev]] = {}
    for e in events:
        if e.visitor_id is not None and not e.is_bot:
            by.setdefault(e.visitor_id, []).append(e)
    return [v for v in visits if any(v[1] <= e.time <= v[2] and match(e) for e in by.get(v[0], ()))]


@pytest.mark.parametrize("params,match", [
    ({"page": ["/a", "/pricing"]}, lambda e: e.page in ("/a", "/pricing")),
    ({"page": "/docs", "device": "mobile"}, lambda e: e.page == "/docs"),  # device: the visit's own
    ({"name": "signup"}, lambda e: e.name == "signup"),
    ({"name": "engagement", "page": "/b"}, lambda e: e.name == "engagement" and e.page == "/b"),
])
def test_event_filters_keep_the_visits_that_include_a_matching_event(env, params, match):
    """A filter a visit row does not carry (page, event name, ...) keeps the visits that include an
    event matching all such filters, over totals, an entry-page breakdown and a timeseries."""
    visits = model_visits(env["events"])
    start, end = BASE + timedelta(hours=7), BASE + timedelta(days=3, hours=1)
    want = _including([v for v in visits if start <= v[1] < end], env["events"], match)
    if "device" in params:
        want = [v for v in want if v[15] == params["device"]]
    assert want and len(want) < len([v for v in visits if start <= v[1] < end])  # it does filter
    body = get(env["client"], "totals", metrics=VISIT_METRICS, start=_z(start), end=_z(end), **params)
    assert "raw" in body["meta"]["sources"]["visits"]
    assert_metrics(body["results"][0], metrics_of(want))
    body = get(env["client"], "breakdown", group_by=["entry_page"], metrics=VISIT_METRICS, start=_z(start),
               end=_z(end), limit=100, **params)
    groups: dict[str, list] = {}
    for v in want:
        groups.setdefault(v[9], []).append(v)
    assert {r["entry_page"]: r["visits"] for r in body["results"]} == {k: len(vs) for k, vs in groups.items()}
    body = get(env["client"], "timeseries", metrics=["visits"], interval="1 day", start=_z(start), end=_z(end),
               **params)
    assert sum(r["visits"] for r in body["results"]) == len(want)


@pytest.mark.parametrize("params,field", [
    ({"metrics": ["visits"], "group_by": ["page"]}, "group_by"),
    ({"metrics": ["bounce_rate", "events"], "page": "/a"}, "page"),
    ({"metrics": ["visits", "events"], "group_by": ["entry_page"]}, "metrics"),
    ({"metrics": ["events"], "exit_page": "/a"}, "metrics"),
])
def test_what_visits_cannot_answer_is_a_422_naming_the_parameter(env, params, field):
    kind = "breakdown" if "group_by" in params else "totals"
    r = env["client"].get(f"/api/v1/stats/{kind}", params=params)
    assert r.status_code == 422, r.text
    assert field in str(r.json()), r.text
