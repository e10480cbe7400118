"""Issue 11 part 1: events get a name, props and where they happened (url -> hostname, path,
UTM; country), and the stats API reads them (group_by, filters, `pageviews`, prop:<key>).

Every refusal is a 4xx naming the field (and for props the key), on the single endpoint (JSON
and text/plain), in a batch (by item index) and in NDJSON, through both ways a route is served
(fast path and FastAPI's). Stats answers are compared with a direct SQL count."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from analytics.ingestion.geo import country_of

pytestmark = pytest.mark.both_paths

UTC = timezone.utc
NEW_DIMS = ("name", "hostname", "country", "utm_source", "utm_medium", "utm_campaign")


def _stored(db, event_id: str) -> dict:
    cur = db.execute("SELECT page, name, props, hostname, utm_source, utm_medium, utm_campaign, country "
                     "FROM events WHERE id = %s", (event_id,))
    cols = [d.name for d in cur.description]
    row = cur.fetchone()
    assert row is not None, event_id
    return dict(zip(cols, row))


def test_url_gives_hostname_path_and_utm_and_name_props_are_stored(client, db):
    r = client.post("/api/events/", json={
        "url": "https://Shop.Example:8443/pricing?utm_source=news&utm_medium=email&utm_campaign=fall%20sale&x=1#top",
        "name": "Signup", "props": {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": True, "gone": None}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["page"] == "/pricing" and body["hostname"] == "shop.example" and body["name"] == "Signup"
    row = _stored(db, body["id"])
    assert row == {"page": "/pricing", "name": "Signup",
                   "props": {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": True},  # null dropped
                   "hostname": "shop.example", "utm_source": "news", "utm_medium": "email",
                   "utm_campaign": "fall sale", "country": ""}
    got = client.get(f"/api/events/{body['id']}/").json()
    assert got["props"] == row["props"] and got["utm_campaign"] == "fall sale"


def test_page_wins_for_the_path_and_url_for_host_and_utm(client, db):
    r = client.post("/api/events/", json={"page": "/docs#install", "url": "https://a.example/docs?utm_source=x#install"})
    row = _stored(db, r.json()["id"])
    assert (row["page"], row["hostname"], row["utm_source"]) == ("/docs#install", "a.example", "x")


@pytest.mark.parametrize("page,stored,utm_source", [
    ("/landing?utm_source=google&utm_medium=cpc", "/landing", "google"),
    ("/a?q=1#frag", "/a#frag", ""),                     # the fragment stays, the query goes
    ("/#/signup?utm_source=hash", "/#/signup?utm_source=hash", ""),  # a hash route keeps its query
    ("?utm_source=bare", "/", "bare"),
])
def test_a_page_with_a_query_is_split(client, db, page, stored, utm_source):
    r = client.post("/api/events/", json={"page": page})
    assert r.status_code == 201, r.text
    row = _stored(db, r.json()["id"])
    assert (row["page"], row["utm_source"], row["hostname"]) == (stored, utm_source, "")


def test_a_seed_004_body_is_stored_as_before(client, db):
    body = {"page": "/pricing", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
            "referrer": "https://www.google.com/", "session_id": "s-1", "duration": 15,
            "ip_address": "203.0.113.7", "description": "viewed pricing"}
    r = client.post("/api/events/", json=body)
    assert r.status_code == 201, r.text
    row = _stored(db, r.json()["id"])
    assert row == {"page": "/pricing", "name": "pageview", "props": None, "hostname": "",
                   "utm_source": "", "utm_medium": "", "utm_campaign": "", "country": ""}
    r = client.post("/api/events/batch", json=[{"page": "/a"}, {"page": "/b", "duration": 3}])
    assert r.status_code == 201, r.text
    assert [_stored(db, i)["name"] for i in r.json()["ids"]] == ["pageview", "pageview"]


def test_country_is_looked_up_from_the_client_address(server, db):
    """The sender's address (here the ingest key's ip_address: a server-side sender) goes
    through ingestion/geo.py country_of before it is discarded; the IP itself is not stored."""
    import httpx
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {server.key['ingest']}"}) as c:
        for ip in ("8.8.8.8", "81.2.69.142", "2001:4860:4860::8888", "10.0.0.1"):
            r = c.post("/api/events/", json={"page": "/geo", "ip_address": ip})
            assert r.status_code == 201, r.text
            row = _stored(db, r.json()["id"])
            assert row["country"] == country_of(ip), ip
            assert db.execute("SELECT ip_address FROM events WHERE id = %s", (r.json()["id"],)).fetchone()[0] is None


LONG = "k" * 301
BAD = [  # (body fields, loc after ["body"] (or ["body", index]), HTTP status)
    ({"page": "/", "name": ""}, ["name"]),
    ({"page": "/", "name": "n" * 121}, ["name"]),
    ({"page": "/", "name": "a\u0000b"}, ["name"]),
    ({"page": "/", "name": 7}, ["name"]),
    ({"page": "/", "props": ["a"]}, ["props"]),
    ({"page": "/", "props": "plan=pro"}, ["props"]),
    ({"page": "/", "props": {f"k{i}": i for i in range(31)}}, ["props"]),
    ({"page": "/", "props": {"plan": {"tier": "pro"}}}, ["props", "plan"]),
    ({"page": "/", "props": {"plan": ["pro"]}}, ["props", "plan"]),
    ({"page": "/", "props": {"plan": "é" * 1001}}, ["props", "plan"]),   # 2,002 bytes
    ({"page": "/", "props": {LONG: 1}}, ["props", LONG]),
    ({"page": "/", "props": {"big": 2 ** 60}}, ["props", "big"]),
    ({"page": "/", "props": {"nul": "a\u0000"}}, ["props", "nul"]),
    ({"page": "/", "props": {"": 1}}, ["props", ""]),
    ({"page": "/", "url": "https://h.example/?utm_source=" + "s" * 513}, ["url"]),
    ({"page": "/", "url": "https://[::1/"}, ["url"]),
    ({"page": "/", "url": "https://" + "h" * 254 + "/"}, ["url"]),
    ({"page": "/?utm_campaign=" + "c" * 513}, ["page"]),
    ({"url": ""}, ["page"]),
    ({"description": "no page, no url"}, ["page"]),
]


@pytest.mark.parametrize("fields,loc", BAD, ids=[f"{'-'.join(map(str, b[1]))[:20]}-{i}" for i, b in enumerate(BAD)])
def test_every_refusal_names_the_field_everywhere(client, fields, loc):
    text = json.dumps(fields)
    for headers in ({"content-type": "application/json"}, {"content-type": "text/plain;charset=UTF-8"}):
        r = client.post("/api/events/", content=text, headers=headers)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [["body", *loc]], r.text
    good = json.dumps({"page": "/ok"})
    r = client.post("/api/events/batch", content=f"[{good}, {text}]", headers={"content-type": "text/plain"})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", 1, *loc]], r.text
    r = client.post("/api/events/batch", content=f"{good}\n{text}\n", headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 422, r.text
    assert [(e["loc"], e.get("line")) for e in r.json()["detail"]] == [(["body", 1, *loc], 2)], r.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_props_numbers_must_be_finite(client, literal):
    text = '{"page": "/", "props": {"score": %s}}' % literal
    r = client.post("/api/events/", content=text, headers={"content-type": "text/plain"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "props", "score"]
    r = client.post("/api/events/batch", content=f"[{text}]")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", 0, "props", "score"], r.text


def test_props_at_their_limits_are_stored(client, db):
    props = {("é" * 150): "ü" * 1000, **{f"k{i}": i for i in range(28)}, "max": 2 ** 53}
    r = client.post("/api/events/", json={"page": "/", "name": "n" * 120, "props": props})
    assert r.status_code == 201, r.text
    assert _stored(db, r.json()["id"])["props"] == props


# --- stats: the new dimensions and `pageviews`, against a direct SQL count -------------------

def _z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def window(client):
    """Events over two whole hours, three days ago (inside MAX_EVENT_AGE_DAYS): custom events and
    pageviews on two hosts, with and without UTM parameters; one bot."""
    start = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    hosts = ("a.example", "b.example")
    events = []
    for i in range(120):
        t = start + timedelta(minutes=i, seconds=7)
        q = ("?utm_source=news&utm_medium=email&utm_campaign=c%d" % (i % 3)) if i % 4 == 0 else ""
        ev = {"id": str(uuid.uuid4()), "time": _z(t), "url": f"https://{hosts[i % 2]}/p{i % 5}{q}",
              "duration": i % 30, "session_id": f"s{i % 17}"}
        if i % 5 == 0:
            ev["name"] = "Signup" if i % 2 else "Outbound Link: Click"
            ev["props"] = {"plan": ("pro", "free")[i % 2], "seats": i % 3}
        if i == 7:
            ev["user_agent"] = "Googlebot/2.1 (+http://www.google.com/bot.html)"
        events.append(ev)
    r = client.post("/api/events/batch", json=events)
    assert r.status_code == 201, r.text
    return start, start + timedelta(hours=2)


def _sql_counts(db, start, end, column: str, where: str = "TRUE") -> dict[str, tuple[int, int]]:
    rows = db.execute(f"SELECT {column}, count(*), count(*) FILTER (WHERE name = 'pageview') FROM events "
                      f"WHERE time >= %s AND time < %s AND NOT is_bot AND {where} GROUP BY 1",
                      (start, end)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.parametrize("dim", NEW_DIMS)
@pytest.mark.parametrize("source", ["plan", "raw"])
def test_group_by_each_new_dimension_equals_sql(client, db, window, dim, source):
    start, end = window
    params = {"group_by": dim, "metrics": ["events", "pageviews"], "start": _z(start), "end": _z(end),
              "limit": 1000}
    if source == "raw":
        params["source"] = "raw"
    r = client.get("/api/v1/stats/breakdown", params=params)
    assert r.status_code == 200, r.text
    got = {row[dim]: (row["events"], row["pageviews"]) for row in r.json()["results"]}
    assert got == _sql_counts(db, start, end, dim)
    if source == "plan":  # by hour: the narrow issue-11 families (evt, geo, utm)
        fam = {"name": "evt", "hostname": "evt", "country": "geo"}.get(dim, "utm")
        assert f"rollup_agg_{fam}_1h" in r.json()["meta"]["source"], r.json()["meta"]


@pytest.mark.parametrize("dim,value", [("name", "Signup"), ("hostname", "b.example"), ("utm_source", "news"),
                                       ("utm_campaign", "c1"), ("utm_medium", ""), ("country", "")])
def test_filter_on_each_new_dimension_equals_sql(client, db, window, dim, value):
    start, end = window
    r = client.get("/api/v1/stats/totals", params={dim: value, "metrics": ["events", "pageviews"],
                                                   "start": _z(start), "end": _z(end)})
    assert r.status_code == 200, r.text
    want = _sql_counts(db, start, end, "'all'", f"{dim} = '{value}'").get("all", (0, 0))
    res = r.json()["results"]
    row = res[0] if isinstance(res, list) else res
    assert (row["events"], row["pageviews"]) == want


def test_pageviews_over_time_equals_sql(client, db, window):
    start, end = window
    r = client.get("/api/v1/stats/timeseries", params={"interval": "hour", "metrics": ["events", "pageviews"],
                                                       "start": _z(start), "end": _z(end)})
    assert r.status_code == 200, r.text
    got = [(row["events"], row["pageviews"]) for row in r.json()["results"]]
    want = [_sql_counts(db, start + timedelta(hours=h), start + timedelta(hours=h + 1), "'x'")["x"] for h in (0, 1)]
    assert got == want


# --- prop:<key> ------------------------------------------------------------------------------

def test_prop_breakdown_equals_sql(client, db, window):
    start, end = window
    r = client.get("/api/v1/stats/breakdown", params={"group_by": ["prop:plan", "name"], "metrics": ["events"],
                                                      "start": _z(start), "end": _z(end), "limit": 100})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["source"] == "raw"
    got = {(row["prop:plan"], row["name"]): row["events"] for row in r.json()["results"]}
    rows = db.execute("SELECT coalesce(props->>'plan', ''), name, count(*) FROM events WHERE time >= %s AND "
                      "time < %s AND NOT is_bot GROUP BY 1, 2", (start, end)).fetchall()
    assert got == {(a, b): n for a, b, n in rows}
    assert {k[0] for k in got} == {"", "pro", "free"}


def test_prop_filter_equals_sql(client, db, window):
    start, end = window
    r = client.get("/api/v1/stats/breakdown", params={"group_by": "prop:seats", "prop": ["plan:pro", "plan:free"],
                                                      "metrics": ["events", "unique_sessions"],
                                                      "start": _z(start), "end": _z(end)})
    assert r.status_code == 200, r.text
    got = {row["prop:seats"]: (row["events"], row["unique_sessions"]) for row in r.json()["results"]}
    rows = db.execute("SELECT props->>'seats', count(*), count(DISTINCT session_id) FROM events WHERE time >= %s "
                      "AND time < %s AND NOT is_bot AND props->>'plan' IN ('pro', 'free') GROUP BY 1",
                      (start, end)).fetchall()
    assert got == {a: (n, s) for a, n, s in rows} and len(got) == 3


def test_a_prop_key_with_quotes_and_percent_is_only_data(client, db):
    """Keys are sent as parameters: any text, none of it SQL."""
    key = "it's 100% \"odd\" é"
    r = client.post("/api/events/", json={"page": "/odd", "name": "Odd", "props": {key: "v"}})
    assert r.status_code == 201, r.text
    r = client.get("/api/v1/stats/breakdown", params={"group_by": f"prop:{key}", "prop": f"{key}:v",
                                                      "metrics": "events"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0][f"prop:{key}"] == "v" and r.json()["results"][0]["events"] >= 1


@pytest.mark.parametrize("params,name", [
    ({"group_by": "prop:"}, "group_by"),
    ({"group_by": "prop:" + "k" * 301}, "group_by"),
    ({"group_by": "prop:a\tb"}, "group_by"),
    ({"group_by": "nope"}, "group_by"),
    ({"prop": "plan"}, "prop"),
    ({"prop": ":pro"}, "prop"),
    ({"prop": "k" * 301 + ":v"}, "prop"),
    ({"prop": "plan:" + "v" * 2001}, "prop"),
])
def test_bad_prop_parameters_are_422_naming_them(client, params, name):
    r = client.get("/api/v1/stats/breakdown", params={"group_by": "page", **params})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["query", name], r.text
