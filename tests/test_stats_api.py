"""GET /api/v1/stats/*: every metric, grouping, filter and time zone against an independent
Python computation over the stored events; zero-fill, paging, previous period, and 422s."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from typing import List

import httpx
import pytest
from pydantic import TypeAdapter

from analytics.aggregation.seed_api import EventBucketSchema

import stats_reference as ref
from support import Server, connect, drop_schema, new_schema_name

pytestmark = pytest.mark.both_paths

UTC = timezone.utc
ALL_METRICS = ["events", "unique_sessions", "avg_duration", "median_duration", "p95_duration"]
YEAR = datetime.now(UTC).year - 1
BERLIN, NEW_YORK, KOLKATA = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")
BERLIN_SPRING, BERLIN_FALL = ref.last_year_transitions(BERLIN, YEAR)
NY_SPRING, NY_FALL = ref.last_year_transitions(NEW_YORK, YEAR)
DAY = timedelta(days=1)
WINDOWS = [(BERLIN_SPRING - 3 * DAY, BERLIN_SPRING + 3 * DAY), (NY_SPRING - 3 * DAY, NY_SPRING + 3 * DAY),
           (BERLIN_FALL - 3 * DAY, NY_FALL + 3 * DAY)]


@pytest.fixture(scope="module")
def stats(db_url, api_mode):
    schema = new_schema_name("stats")
    srv = Server(db_url, schema, env={"MAX_EVENT_AGE_DAYS": "800", "STATS_CACHE_TTL_SECONDS": "0",
                                      "FAST_PATHS": str(api_mode == "fast").lower(),
                                      "STATS_ALLOW_RAW_SOURCE": "true"}).start()
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as client:
            ref.post_batches(client, ref.make_events(random.Random(4), WINDOWS, 3000))
            conn = connect(db_url, schema)
            events = ref.stored_events(conn)
            conn.close()
            assert len(events) == 3000
            yield client, events
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def _z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def get(client, path, **params):
    r = client.get(f"/api/v1/stats/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _interval(text: str):
    n, unit = text.split()
    n = int(n)
    if unit.startswith("month"):
        return ("months", n)
    if unit.startswith("week"):
        return ("days", 7 * n)
    if unit.startswith("day"):
        return ("days", n)
    return ("seconds", n * {"minute": 60, "hour": 3600}[unit.rstrip("s")])


def expected_timeseries(events, start, end, interval, tz, group_by, metrics, filters, include_bots=False,
                        limit=10):
    iv = _interval(interval)
    sel = ref.select(events, start, end, filters, include_bots)
    buckets = ref.all_buckets(start, end, iv, tz)
    # Grouped: the top `limit` groups by the first metric over the whole range, in that order.
    groups = ref.ranked(ref.grouped(sel, group_by), metrics[0], True)[:limit] if group_by else [()]
    per = {}
    for e in sel:
        per.setdefault((ref.bucket_start(e.time, iv, tz), ref.group_key(e, group_by)), []).append(e)
    rows = []
    for b in buckets:
        for g in groups:
            evs = per.get((b, g), [])
            row = {"bucket": b.astimezone(tz).isoformat(), **dict(zip(group_by, g))}
            row.update({m: ref.metric(evs, m) for m in metrics})
            rows.append(row)
    return rows


def assert_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for k in w:
            assert ref.approx_equal(g[k], w[k]), (k, g, w)


TIMESERIES_CASES = [
    # zone, interval, start, end, group_by
    (BERLIN, "1 hour", BERLIN_SPRING - DAY, BERLIN_SPRING + DAY, []),
    (BERLIN, "1 day", BERLIN_SPRING - 3 * DAY, BERLIN_SPRING + 3 * DAY, ["os"]),
    (BERLIN, "30 minutes", BERLIN_FALL - DAY / 2, BERLIN_FALL + DAY / 2, []),
    (BERLIN, "2 hours", BERLIN_SPRING - DAY, BERLIN_SPRING + DAY, ["device"]),
    (NEW_YORK, "1 day", NY_FALL - 3 * DAY, NY_FALL + 3 * DAY, ["page"]),
    (NEW_YORK, "1 hour", NY_FALL - DAY, NY_FALL + DAY, ["browser"]),
    (NEW_YORK, "1 day", NY_SPRING - 3 * DAY, NY_SPRING + 3 * DAY, []),
    (NEW_YORK, "1 week", BERLIN_FALL - 3 * DAY, NY_FALL + 3 * DAY, ["referrer"]),
    (KOLKATA, "1 day", BERLIN_FALL - 3 * DAY, NY_FALL + 3 * DAY, ["page", "os"]),
    (KOLKATA, "1 hour", NY_SPRING - DAY, NY_SPRING + DAY, []),
    (KOLKATA, "15 minutes", NY_SPRING - DAY / 4, NY_SPRING + DAY / 4, []),
    (ZoneInfo("UTC"), "1 month", datetime(YEAR, 1, 1, tzinfo=UTC), datetime(YEAR + 1, 1, 1, tzinfo=UTC), []),
    (BERLIN, "7 hours", BERLIN_FALL - 2 * DAY, BERLIN_FALL + 2 * DAY, []),
]


@pytest.mark.parametrize("tz,interval,start,end,group_by", TIMESERIES_CASES,
                         ids=[f"{c[0].key}-{c[1]}-{'+'.join(c[4]) or 'total'}" for c in TIMESERIES_CASES])
def test_timeseries_matches_reference(stats, tz, interval, start, end, group_by):
    client, events = stats
    body = get(client, "timeseries", interval=interval, timezone=tz.key, start=_z(start), end=_z(end),
               group_by=group_by, metrics=ALL_METRICS)
    want = expected_timeseries(events, start, end, interval, tz, group_by, ALL_METRICS, {})
    assert sum(r["events"] for r in want) > 0
    assert_rows(body["results"], want)
    assert body["meta"]["buckets"] == len({r["bucket"] for r in want})
    assert body["meta"]["timezone"] == tz.key


def test_dst_days_last_23_and_25_hours(stats):
    client, _ = stats
    for tz, t, hours in ((BERLIN, BERLIN_SPRING, 23), (BERLIN, BERLIN_FALL, 25),
                         (NEW_YORK, NY_SPRING, 23), (NEW_YORK, NY_FALL, 25)):
        body = get(client, "timeseries", interval="day", timezone=tz.key, start=_z(t - 2 * DAY), end=_z(t + 2 * DAY))
        starts = [datetime.fromisoformat(r["bucket"]) for r in body["results"]]
        assert all(s.astimezone(tz).hour == 0 and s.astimezone(tz).minute == 0 for s in starts)
        lengths = {(b - a) / timedelta(hours=1) for a, b in zip(starts, starts[1:])}
        assert lengths == {24, hours}, (tz, lengths)
    # Falling back, the repeated local hour is two one-hour buckets with different offsets.
    body = get(client, "timeseries", interval="hour", timezone="Europe/Berlin",
               start=_z(BERLIN_FALL - timedelta(hours=2)), end=_z(BERLIN_FALL + timedelta(hours=2)))
    labels = [r["bucket"] for r in body["results"]]
    assert len(labels) == 4 and labels[1][11:] == "02:00:00+02:00" and labels[2][11:] == "02:00:00+01:00"
    # Kolkata (+05:30): days start at 18:30 UTC.
    body = get(client, "timeseries", interval="day", timezone="Asia/Kolkata",
               start=_z(NY_FALL - 2 * DAY), end=_z(NY_FALL + 2 * DAY))
    assert all(r["bucket"].endswith("T00:00:00+05:30") for r in body["results"])


@pytest.mark.parametrize("group_by", [["page"], ["os"], ["browser"], ["device"], ["referrer"], ["page", "device"]])
@pytest.mark.parametrize("order_by", ["events", "unique_sessions:asc", "avg_duration", "median_duration:desc",
                                      "p95_duration:asc"])
def test_breakdown_matches_reference(stats, group_by, order_by):
    client, events = stats
    start, end = WINDOWS[2]
    name, _, direction = order_by.partition(":")
    sel = ref.select(events, start, end, {}, False)
    groups = ref.grouped(sel, group_by)
    order = ref.ranked(groups, name, direction != "asc")
    for offset, limit in ((0, 3), (2, 4), (0, 1000)):
        body = get(client, "breakdown", group_by=group_by, metrics=ALL_METRICS, order_by=order_by,
                   start=_z(start), end=_z(end), limit=limit, offset=offset)
        want = [{**dict(zip(group_by, k)), **{m: ref.metric(groups[k], m) for m in ALL_METRICS}}
                for k in order[offset:offset + limit]]
        assert_rows(body["results"], want)
        assert body["meta"]["total_groups"] == len(groups)
    assert len(groups) >= 3


FILTER_CASES = [
    {"page": ["/", "/about"]},
    {"page_prefix": ["/blog/"]},
    {"page_prefix": ["/blog/b_", "/docs/y%"]},   # LIKE wildcards are literal
    {"os": ["iOS", "Android"]},
    {"os": ["windows"]},                          # case-insensitive, canonical value
    {"browser": ["Firefox"]},
    {"device": ["mobile"], "referrer": ["google.com", ""]},
    {"referrer": ["news.ycombinator.com"]},
    {"device": ["bot"]},
    {"page_prefix": ["/docs"], "os": ["Linux", "MacOS"], "device": ["desktop"]},
]


@pytest.mark.parametrize("filters", FILTER_CASES, ids=lambda f: "+".join(f"{k}={'|'.join(v)}" for k, v in f.items()))
@pytest.mark.parametrize("include_bots", [False, True])
def test_filters_match_reference(stats, filters, include_bots):
    client, events = stats
    start, end = WINDOWS[0]
    canon = {k: [("Windows" if v == "windows" else v) for v in vals] for k, vals in filters.items()}
    sel = ref.select(events, start, end, canon, include_bots)
    body = get(client, "totals", metrics=ALL_METRICS, start=_z(start), end=_z(end),
               include_bots=str(include_bots).lower(), **filters)
    assert_rows(body["results"], [{m: ref.metric(sel, m) for m in ALL_METRICS}])
    ts = get(client, "timeseries", interval="6 hours", timezone="America/New_York", group_by=["page"],
             metrics=["events", "unique_sessions"], start=_z(start), end=_z(end),
             include_bots=str(include_bots).lower(), **filters)
    assert_rows(ts["results"], expected_timeseries(events, start, end, "6 hours", NEW_YORK, ["page"],
                                                   ["events", "unique_sessions"], canon, include_bots))
    if filters == {"device": ["bot"]}:
        assert (body["results"][0]["events"] > 0) == include_bots


def test_totals_and_previous_period(stats):
    client, events = stats
    start, end = BERLIN_FALL, NY_FALL + 3 * DAY
    span = end - start
    body = get(client, "totals", metrics=ALL_METRICS, compare="previous", start=_z(start), end=_z(end))
    cur = ref.select(events, start, end, {}, False)
    prev = ref.select(events, start - span, start, {}, False)
    (row,) = body["results"]
    assert_rows([{k: v for k, v in row.items() if k != "previous"}], [{m: ref.metric(cur, m) for m in ALL_METRICS}])
    assert_rows([row["previous"]], [{m: ref.metric(prev, m) for m in ALL_METRICS}])
    assert row["previous"]["events"] > 0 and row["events"] > 0
    assert body["meta"]["previous"]["end"] == body["meta"]["start"]
    # Grouped totals with compare: each group's previous values, groups absent before get zeros.
    body = get(client, "totals", metrics=["events"], group_by=["page"], compare="previous",
               start=_z(start), end=_z(end))
    prev_groups = ref.grouped(prev, ["page"])
    for r in body["results"]:
        assert r["previous"]["events"] == len(prev_groups.get((r["page"],), []))


def test_zero_fill_and_top_groups(stats):
    client, events = stats
    # A range that is mostly empty: every bucket is there, with zero counts and null averages.
    start = NY_SPRING + 3 * DAY - timedelta(hours=6)
    end = start + 2 * DAY
    body = get(client, "timeseries", interval="1 hour", start=_z(start), end=_z(end),
               metrics=["events", "unique_sessions", "avg_duration"])
    rows = body["results"]
    assert len(rows) == 48 and body["meta"]["buckets"] == 48
    empty = [r for r in rows if r["events"] == 0]
    assert len(empty) >= 40 and all(r["unique_sessions"] == 0 and r["avg_duration"] is None for r in empty)
    # Grouped: each group present in the range gets every bucket (top 10 by default, all on request).
    body = get(client, "timeseries", interval="1 hour", start=_z(start), end=_z(end), group_by=["page"])
    pages = {r["page"] for r in body["results"]}
    assert len(body["results"]) == 48 * len(pages) and pages
    assert body["meta"]["limit"] == 10 and body["meta"]["total_groups"] == len(pages)
    start, end = WINDOWS[2]
    body = get(client, "timeseries", interval="1 day", start=_z(start), end=_z(end), group_by=["page", "os"])
    assert len({(r["page"], r["os"]) for r in body["results"]}) == 10 < body["meta"]["total_groups"]
    everything = get(client, "timeseries", interval="1 day", start=_z(start), end=_z(end), group_by=["page", "os"],
                     limit=10000)
    assert len({(r["page"], r["os"]) for r in everything["results"]}) == body["meta"]["total_groups"]
    assert_rows(everything["results"], expected_timeseries(events, start, end, "1 day", ZoneInfo("UTC"),
                                                           ["page", "os"], ["events"], {}, limit=10000))
    # limit/offset on a timeseries pick groups by order_by over the whole range.
    groups = ref.grouped(ref.select(events, start, end, {}, False), ["page"])
    order = ref.ranked(groups, "events", True)
    body = get(client, "timeseries", interval="1 day", start=_z(start), end=_z(end), group_by=["page"],
               limit=2, offset=1)
    assert [r["page"] for r in body["results"][:2]] == [order[1][0], order[2][0]]
    assert {r["page"] for r in body["results"]} == {order[1][0], order[2][0]}
    assert body["meta"]["total_groups"] == len(groups)


def test_defaults_and_meta(stats):
    client, _ = stats
    body = get(client, "timeseries")
    meta = body["meta"]
    assert meta["interval"] == "1 day" and meta["timezone"] == "UTC"
    end = datetime.fromisoformat(meta["end"])
    assert datetime.fromisoformat(meta["start"]) == end - timedelta(days=30)
    assert timedelta(0) <= end - datetime.now(UTC) <= timedelta(minutes=15, seconds=5)
    assert meta["source"] and meta["sources"] == {"events": meta["source"]}
    assert 30 <= len(body["results"]) <= 31 and all(r["events"] == 0 for r in body["results"])
    # Naive start/end are wall time in the requested zone.
    body = get(client, "totals", start=f"{YEAR}-03-01T00:00:00", end=f"{YEAR}-03-02T00:00:00", timezone="Asia/Kolkata")
    assert body["meta"]["start"] == f"{YEAR}-03-01T00:00:00+05:30"
    breakdown = get(client, "breakdown", group_by="os", start=_z(WINDOWS[2][0]), end=_z(WINDOWS[2][1]))
    assert breakdown["meta"]["limit"] == 10 and breakdown["meta"]["order_by"] == "events:desc"
    assert "rollup_agg_tech" in breakdown["meta"]["source"]
    raw = get(client, "breakdown", group_by="os", start=_z(WINDOWS[2][0]), end=_z(WINDOWS[2][1]), source="raw")
    assert raw["meta"]["source"] == "raw" and raw["results"] == breakdown["results"]


def test_openapi_types_the_parameters(stats):
    client, _ = stats
    spec = client.get("/openapi.json").json()
    for path in ("timeseries", "breakdown", "totals"):
        params = {p["name"]: p for p in spec["paths"][f"/api/v1/stats/{path}"]["get"]["parameters"]}
        assert {"interval", "start", "end", "timezone", "group_by", "metrics", "page", "page_prefix", "os",
                "browser", "device", "referrer", "include_bots", "order_by", "limit", "offset"} <= set(params)
        assert ("compare" in params) == (path == "totals")
        assert "source" not in params
        dims, props = params["group_by"]["schema"]["items"]["anyOf"]
        assert dims["enum"] == ["page", "os", "browser", "device", "referrer", "name", "hostname", "country",
                                "utm_source", "utm_medium", "utm_campaign",
                                "entry_page", "exit_page"]
        assert props["pattern"].startswith("^prop:")
        assert "prop" in params and "pageviews" in params["metrics"]["schema"]["items"]["enum"]
        assert params["group_by"]["required"] == (path == "breakdown")
        assert "p95_duration" in params["metrics"]["schema"]["items"]["enum"]
        assert "Europe/Berlin" in params["timezone"]["schema"]["enum"]
        assert params["start"]["schema"]["anyOf"][0]["pattern"].startswith("^[0-9]{4}-")
        assert params["interval"]["schema"]["anyOf"][0]["maxLength"] == 64
        assert params["page"]["schema"]["maxItems"] == 100
        ok = spec["paths"][f"/api/v1/stats/{path}"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/StatsResponse")


INVALID = [
    ("timeseries", {"interval": "fortnight"}, "interval"),
    ("timeseries", {"interval": "30 seconds"}, "interval"),
    ("timeseries", {"interval": "2 years"}, "interval"),
    ("timeseries", {"interval": "-1 day"}, "interval"),
    ("timeseries", {"interval": "1 minute", "start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}, "interval"),
    ("totals", {"interval": "1 fortnight"}, "interval"),
    ("totals", {"start": "yesterday"}, "start"),
    ("totals", {"end": "2025-13-01"}, "end"),
    ("totals", {"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end"),
    ("totals", {"start": "2025-02-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}, "end"),
    ("totals", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("totals", {"timezone": "../../etc/passwd"}, "timezone"),
    ("totals", {"timezone": "+05:30"}, "timezone"),
    ("breakdown", {"group_by": "city"}, "group_by"),
    ("breakdown", {}, "group_by"),
    ("totals", {"metrics": "conversion_rate"}, "metrics"),  # bounce_rate is a metric since issue 11
    ("totals", {"os": "Plan9"}, "os"),
    ("totals", {"device": "fridge"}, "device"),
    ("totals", {"page": ""}, "page"),
    ("totals", {"page_prefix": ""}, "page_prefix"),
    ("totals", {"include_bots": "maybe"}, "include_bots"),
    ("breakdown", {"group_by": "page", "order_by": "unique_sessions"}, "order_by"),
    ("breakdown", {"group_by": "page", "order_by": "events:up"}, "order_by"),
    ("breakdown", {"group_by": "page", "limit": "0"}, "limit"),
    ("breakdown", {"group_by": "page", "limit": "ten"}, "limit"),
    ("breakdown", {"group_by": "page", "offset": "-1"}, "offset"),
    ("totals", {"limit": "5"}, "limit"),
    ("timeseries", {"group_by": ["page", "os"], "interval": "1 minute", "limit": "1000",  # > 200,000 rows
                    "start": _z(BERLIN_FALL - 3 * DAY), "end": _z(BERLIN_FALL + timedelta(minutes=9900) - 3 * DAY)},
     "limit"),
    ("totals", {"compare": "next"}, "compare"),
    ("timeseries", {"compare": "previous"}, "compare"),
    ("totals", {"bogus": "1"}, "bogus"),
    ("totals", {"page": "x" * 3000}, "page"),
]


@pytest.mark.parametrize("path,params,field", INVALID, ids=[f"{p}-{f}-{i}" for i, (p, _, f) in enumerate(INVALID)])
def test_invalid_parameter_is_422_naming_it(stats, path, params, field):
    client, _ = stats
    r = client.get(f"/api/v1/stats/{path}", params=params)
    assert r.status_code == 422, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert any(loc[0] == "query" and loc[1] == field for loc in locs), locs


def test_seed_endpoint_through_rollups_equals_raw(stats):
    client, events = stats
    pages = ["/", "/blog/a", "/pricing"]
    for duration in ("1 hour", "1 day", "1 week", "1 month", "90 minutes", "15 minutes"):
        auto = client.get("/api/events/", params={"duration": duration, "pages": pages})
        raw = client.get("/api/events/", params={"duration": duration, "pages": pages, "source": "raw"})
        assert auto.status_code == raw.status_code == 200
        assert auto.json() == raw.json(), duration
    # And against Python: daily counts and averages per page and os.
    want: dict[tuple, list[int]] = {}
    for e in events:
        if e.page in pages:
            day = e.time.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            want.setdefault((day, e.page, e.os), []).append(e.duration)
    resp = client.get("/api/events/", params={"duration": "1 day", "pages": pages})
    got = resp.json()
    assert len(got) == len(want)
    # Byte for byte what FastAPI renders for the seed's response_model.
    adapter = TypeAdapter(List[EventBucketSchema])
    rendered = json.dumps(adapter.dump_python(adapter.validate_python(got), mode="json"), ensure_ascii=False,
                          allow_nan=False, separators=(",", ":")).encode()
    assert resp.content == rendered and b'Z"' in resp.content
    for r in got:
        durations = want[(datetime.fromisoformat(r["bucket"]).replace(tzinfo=UTC), r["page"], r["operating_system"])]
        assert r["count"] == len(durations)
        assert ref.approx_equal(r["avg_duration"], sum(durations) / len(durations))


@pytest.mark.parametrize("name", ["page; DROP TABLE events", "Page", "p%s", 'os"', ""])
def test_statements_refuse_names_that_are_not_ours(name):
    """Request values travel as parameters; only our own lower-case names are written into a
    statement's text, and anything else is refused there too (defence in depth)."""
    from analytics.aggregation.builder import ident, json_key

    with pytest.raises(ValueError):
        ident(name)
    with pytest.raises(ValueError):
        json_key(name)
    assert ident("referrer_host") == '"referrer_host"' and json_key("p95_duration") == """'"p95_duration":'"""
