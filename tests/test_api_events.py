"""The seed-004 API end to end: POST/GET round trip, the time window, aggregation checked against
an independent computation in Python, CORS, OpenAPI and request ids."""
from __future__ import annotations

import random
import re
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from analytics.aggregation.seed_api import DEFAULT_LOOKUP_PAGES
from support import Server, connect, drop_schema, new_schema_name

pytestmark = pytest.mark.both_paths

EVENT_FIELDS = {"id", "time", "page", "ip_address", "user_agent", "referrer", "session_id",
                "duration", "description", "os", "browser", "device", "is_bot"}
BUCKET_FIELDS = {"bucket", "page", "operating_system", "avg_duration", "count"}

UAS = {
    "Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/124.0.0.0 Safari/537.36",
    "MacOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.4.1 Safari/605.1.15",
    "iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Linux": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "ChromeOS": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/124.0.0.0 Safari/537.36",
    "Other": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}
NON_DEFAULT_PAGE = "/not-in-the-default-list"
PAGES = ["/", "/about", "/blog", "/pricing", NON_DEFAULT_PAGE]
assert NON_DEFAULT_PAGE not in DEFAULT_LOOKUP_PAGES and set(PAGES[:-1]) <= set(DEFAULT_LOOKUP_PAGES)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def parse_time(s: str) -> datetime:
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    assert t.tzinfo is not None, s
    return t.astimezone(timezone.utc)


def assert_422_names(r, where: str, field: str) -> None:
    assert r.status_code == 422, r.text
    assert [where, field] in [e["loc"] for e in r.json()["detail"]], r.text


# -- round trip (session server) ----------------------------------------------------------------

def test_post_then_get_round_trip(client, db):
    body = {"page": f"/rt/{uuid.uuid4().hex[:8]}", "ip_address": "192.168.1.1",
            "user_agent": UAS["Windows"], "referrer": "https://www.google.com/search?q=x",
            "session_id": "xyz789", "duration": 15, "description": "User viewed homepage"}
    r = client.post("/api/events/", json=body)
    assert r.status_code == 201, r.text
    ev = r.json()
    assert EVENT_FIELDS <= set(ev)
    uuid.UUID(ev["id"])
    assert abs(parse_time(ev["time"]) - datetime.now(timezone.utc)) < timedelta(minutes=5)
    # Issue 10: no IP is stored (STORE_IP is off, and a browser's ip_address is ignored), and
    # the referrer loses its query string.
    stored = {**body, "ip_address": None, "referrer": "https://www.google.com/search"}
    for k, v in stored.items():
        assert ev[k] == v, k
    assert (ev["os"], ev["browser"], ev["device"], ev["is_bot"]) == ("Windows", "Chrome", "desktop", False)

    got = client.get(f"/api/events/{ev['id']}/")
    assert got.status_code == 200, got.text
    g = got.json()
    for k in EVENT_FIELDS:
        if k == "time":
            assert parse_time(g[k]) == parse_time(ev[k])
        else:
            assert g[k] == ev[k], k

    row = db.execute("SELECT page, duration, os, session_id FROM events WHERE id = %s",
                     (ev["id"],)).fetchone()
    assert row == (body["page"], 15, "Windows", "xyz789")


def test_only_page_is_required(client):
    r = client.post("/api/events/", json={"page": "/only-page"})
    assert r.status_code == 201, r.text
    ev = r.json()
    assert ev["page"] == "/only-page" and ev["duration"] == 0 and ev["os"] == "Other"


def test_unknown_fields_are_ignored(client):
    r = client.post("/api/events/", json={"page": "/extra", "colour": "blue", "nested": {"a": 1}})
    assert r.status_code == 201, r.text
    assert "colour" not in r.json()


def test_unknown_id_is_404_json(client):
    r = client.get(f"/api/events/{uuid.uuid4()}/")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert "not found" in str(r.json()["detail"])


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "00000000-0000-0000-0000-00000000000g"])
def test_malformed_id_is_422_naming_event_id(client, bad):
    assert_422_names(client.get(f"/api/events/{bad}/"), "path", "event_id")


# -- the time window ---------------------------------------------------------------------------

def test_client_time_within_window_is_kept(client, db):
    now = datetime.now(timezone.utc)
    for delta in (timedelta(days=-6, hours=-12), timedelta(hours=-1), timedelta(seconds=30)):
        t = (now + delta).replace(microsecond=123456)
        r = client.post("/api/events/", json={"page": "/window", "time": iso(t)})
        assert r.status_code == 201, (delta, r.text)
        assert parse_time(r.json()["time"]) == t
        (stored,) = db.execute("SELECT time FROM events WHERE id = %s", (r.json()["id"],)).fetchone()
        assert stored == t


def test_client_time_with_offset_and_naive(client):
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    plus2 = now.astimezone(timezone(timedelta(hours=2)))
    r = client.post("/api/events/", json={"page": "/window", "time": plus2.isoformat()})
    assert r.status_code == 201, r.text
    assert parse_time(r.json()["time"]) == now
    # Answered in UTC, as it is stored and read back (the client's offset was echoed before).
    assert r.json()["time"] == now.isoformat().replace("+00:00", "Z")
    assert client.get(f"/api/events/{r.json()['id']}/").json()["time"] == r.json()["time"]
    # A naive timestamp is taken as UTC.
    r = client.post("/api/events/", json={"page": "/window", "time": now.replace(tzinfo=None).isoformat()})
    assert r.status_code == 201, r.text
    assert parse_time(r.json()["time"]) == now


@pytest.mark.parametrize("delta", [timedelta(minutes=10), timedelta(days=365), timedelta(days=-8),
                                   timedelta(days=-7, minutes=-5), timedelta(days=-3650)])
def test_client_time_out_of_window_is_422(client, delta):
    t = datetime.now(timezone.utc) + delta
    r = client.post("/api/events/", json={"page": "/window", "time": iso(t)})
    assert_422_names(r, "body", "time")


# -- aggregation correctness (own server, own schema, so the default page list is ours) ----------

N_EVENTS = 1200


@pytest.fixture(scope="module")
def agg(db_url):
    schema = new_schema_name("agg")
    srv = Server(db_url, schema, env={"CORS_ORIGINS": "https://app.example,https://admin.example",
                                      "WRITE_BATCH_WAIT_MS": "5"})
    try:
        srv.start()
        rng = random.Random(4004)
        now = datetime.now(timezone.utc)
        events = []
        for i in range(N_EVENTS):
            os_name = rng.choice(list(UAS))
            ev = {"page": rng.choice(PAGES), "user_agent": UAS[os_name],
                  "time": iso(now - timedelta(seconds=rng.uniform(60, 5 * 86400)))}
            roll = rng.random()
            if roll < 0.05:
                pass  # no duration: stored as 0, as in seed 004
            elif roll < 0.08:
                ev["duration"] = None
            else:
                ev["duration"] = rng.randint(0, 900)
            events.append((os_name, ev))

        def send(chunk):
            with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
                return [c.post("/api/events/", json=ev).status_code for _, ev in chunk]

        with ThreadPoolExecutor(6) as ex:
            codes = [c for part in ex.map(send, [events[i::6] for i in range(6)]) for c in part]
        assert codes == [201] * N_EVENTS
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
            yield srv, c, events, schema, db_url
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def floor_time(t: datetime, width: str) -> datetime:
    t = t.astimezone(timezone.utc)
    if width == "15 minutes":
        return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
    if width == "1 hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if width == "1 day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if width == "1 week":  # TimescaleDB's default origin is a Monday (2000-01-03)
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - timedelta(days=day.weekday())
    raise AssertionError(width)


def expected_buckets(events, width: str, pages) -> dict:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for os_name, ev in events:
        if ev["page"] in pages:
            key = (floor_time(parse_time(ev["time"]), width), ev["page"], os_name)
            groups[key].append(ev.get("duration") or 0)
    return {k: (sum(v) / len(v), len(v)) for k, v in groups.items()}


def db_order(db_url: str, schema: str, values) -> dict[str, int]:
    """Rank of each string under the database's own collation (ORDER BY page, os uses it)."""
    with connect(db_url, schema) as conn:
        rows = conn.execute("SELECT x FROM unnest(%s::text[]) AS x ORDER BY x", (list(values),)).fetchall()
    return {r[0]: i for i, r in enumerate(rows)}


def check(agg, width: str, pages: list[str] | None) -> list[dict]:
    srv, c, events, schema, db_url = agg
    params = [("duration", width)] if width else []
    params += [("pages", p) for p in pages or []]
    r = c.get("/api/events/", params=params)
    assert r.status_code == 200, r.text
    got = r.json()
    lookup = pages or DEFAULT_LOOKUP_PAGES
    want = expected_buckets(events, width or "1 day", set(lookup))
    assert len(got) == len(want)
    seen = {}
    for row in got:
        assert set(row) == BUCKET_FIELDS
        key = (parse_time(row["bucket"]), row["page"], row["operating_system"])
        assert key in want, key
        avg, count = want[key]
        assert row["count"] == count, key
        assert row["avg_duration"] == pytest.approx(avg, rel=1e-9, abs=1e-9), key
        seen[key] = row
    assert set(seen) == set(want)
    # Ordered by bucket, page, operating_system (strings in the database's collation).
    page_rank = db_order(db_url, schema, PAGES)
    os_rank = db_order(db_url, schema, UAS)
    keys = [(parse_time(r["bucket"]), page_rank[r["page"]], os_rank[r["operating_system"]]) for r in got]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    return got


def test_hourly_buckets_default_pages(agg):
    got = check(agg, "1 hour", None)
    assert len({r["bucket"] for r in got}) > 24          # several hours ...
    assert {r["page"] for r in got} == set(PAGES) - {NON_DEFAULT_PAGE}  # ... default pages only
    assert {r["operating_system"] for r in got} == set(UAS)


def test_daily_buckets_at_utc_midnight(agg):
    got = check(agg, "1 day", None)
    buckets = {parse_time(r["bucket"]) for r in got}
    assert len(buckets) >= 5
    assert all(b.hour == 0 and b.minute == 0 and b.second == 0 for b in buckets)
    assert sum(r["count"] for r in got) == sum(1 for _, ev in agg[2] if ev["page"] != NON_DEFAULT_PAGE)


def test_default_duration_is_one_day(agg):
    assert check(agg, "", None) == agg[1].get("/api/events/", params={"duration": "1 day"}).json()


def test_explicit_pages_include_a_non_default_page(agg):
    got = check(agg, "1 hour", ["/about", NON_DEFAULT_PAGE])
    assert {r["page"] for r in got} == {"/about", NON_DEFAULT_PAGE}


@pytest.mark.parametrize("width", ["15 minutes", "1 week"])
def test_other_widths(agg, width):
    check(agg, width, PAGES)


def test_pages_with_no_events(agg):
    r = agg[1].get("/api/events/", params={"pages": "/nobody-visits-this"})
    assert r.status_code == 200 and r.json() == []


# -- CORS, OpenAPI, request ids -----------------------------------------------------------------

def test_cors_default_ingest_from_any_origin_reads_from_none(client):
    """Trackers post from every site; reads answer CORS_ORIGINS only, none by default."""
    r = client.post("/api/events/", json={"page": "/cors"}, headers={"Origin": "https://tracker.example"})
    assert r.status_code == 201 and r.headers["access-control-allow-origin"] == "*"
    pre = client.options("/api/events/", headers={"Origin": "https://tracker.example",
                                                  "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "POST" in pre.headers["access-control-allow-methods"]
    pre = client.options("/api/events/batch", headers={"Origin": "https://tracker.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"
    for path in ("/api/events/", "/api/v1/stats/totals", "/healthz"):
        r = client.get(path, headers={"Origin": "https://tracker.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers, path
        pre = client.options(path, headers={"Origin": "https://tracker.example",
                                            "Access-Control-Request-Method": "GET",
                                            "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 400 and "access-control-allow-origin" not in pre.headers, path
        assert pre.json()["error"] == "cors_refused", pre.text  # JSON, as every other error
    # Each side allows only the methods it serves.
    pre = client.options("/api/events/batch", headers={"Origin": "https://tracker.example",
                                                       "Access-Control-Request-Method": "PUT"})
    assert pre.status_code == 400 and pre.json()["error"] == "cors_refused"
    pre = client.options("/api/events/", headers={"Origin": "https://tracker.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert pre.headers["access-control-allow-methods"] == "POST"


def test_cors_configured_origins(agg):
    c = agg[1]
    # Ingest: any origin, configured or not.
    for origin in ("https://admin.example", "https://evil.example"):
        r = c.post("/api/events/", json={"page": "/cors"}, headers={"Origin": origin})
        assert r.status_code == 201 and r.headers["access-control-allow-origin"] == "*"
        pre = c.options("/api/events/", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
    # Reads: the configured origins only, and a preflight that allows the key's header.
    r = c.get("/api/v1/stats/totals", headers={"Origin": "https://admin.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://admin.example"
    pre = c.options("/api/v1/stats/totals", headers={"Origin": "https://admin.example",
                                                     "Access-Control-Request-Method": "GET",
                                                     "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200 and "authorization" in pre.headers["access-control-allow-headers"].lower()
    assert set(pre.headers["access-control-allow-methods"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    pre = c.options("/api/v1/stats/totals", headers={"Origin": "https://admin.example",
                                                     "Access-Control-Request-Method": "DELETE"})
    assert pre.status_code == 400 and pre.json()["error"] == "cors_refused"
    r = c.get("/api/events/", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = c.options("/api/events/", headers={"Origin": "https://evil.example",
                                             "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 400


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"get", "post"} <= set(paths["/api/events/"])
    assert "get" in paths["/api/events/{event_id}/"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_request_id_echoed_or_generated(client):
    r = client.get("/healthz", headers={"X-Request-Id": "abc-123.x:y_z"})
    assert r.headers["x-request-id"] == "abc-123.x:y_z"
    r = client.post("/api/events/", json={"page": "/rid"}, headers={"X-Request-Id": "rid-42"})
    assert r.status_code == 201 and r.headers["x-request-id"] == "rid-42"
    r = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    # Anything unsafe to log is replaced, not echoed.
    r = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    r = client.get(f"/api/events/{uuid.uuid4()}/", headers={"X-Request-Id": "rid-404"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "rid-404"


def test_greeting_and_health(client):
    assert client.get("/").json() == {"hello": "world"}
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_event_age_window_is_configurable(db_url):
    schema = new_schema_name("window")
    srv = Server(db_url, schema, env={"MAX_EVENT_AGE_DAYS": "0.5", "MAX_CLOCK_SKEW_SECONDS": "5"})
    try:
        srv.start()
        now = datetime.now(timezone.utc)
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
            ok = c.post("/api/events/", json={"page": "/w", "time": iso(now - timedelta(hours=11))})
            assert ok.status_code == 201, ok.text
            old = c.post("/api/events/", json={"page": "/w", "time": iso(now - timedelta(hours=13))})
            assert_422_names(old, "body", "time")
            assert "12 hours" in old.json()["detail"][0]["msg"]
            ahead = c.post("/api/events/", json={"page": "/w", "time": iso(now + timedelta(seconds=60))})
            assert_422_names(ahead, "body", "time")
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def test_seed_notebook_post_without_content_type(client, db):
    """Seed 004's notebook posts `requests.post(url, data=json.dumps(body))`: no Content-Type."""
    import json as _json
    body = _json.dumps({"page": "/seed-notebook", "description": "ali"})
    r = client.post("/api/events/", content=body.encode(), headers={"content-type": ""})
    assert r.status_code == 201, r.text
    assert r.json()["page"] == "/seed-notebook"
    (n,) = db.execute("SELECT count(*) FROM events WHERE id = %s", (r.json()["id"],)).fetchone()
    assert n == 1


def test_body_too_large_is_readable_cross_origin(client):
    big = b'{"page": "/' + b"x" * 11_000_000 + b'"}'
    r = client.post("/api/events/", content=big,
                    headers={"content-type": "application/json", "origin": "https://site.example"})
    assert r.status_code == 413
    assert r.headers.get("access-control-allow-origin") in ("*", "https://site.example")
