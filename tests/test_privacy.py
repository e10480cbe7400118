"""Privacy by default (issue 10, parts 2 and 3), on the real server and database: no raw IP is
stored, each event carries a daily pseudonym (visitor_id) that every worker computes alike, that
only a trusted proxy can change the address it is made from, that rotates with the day's salt;
referrers lose their query and fragment; `privacy scrub` removes old IPs while events arrive."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from analytics.auth.principal import INGEST, READ, Principal, set_principal
from analytics.ingestion.bodies import batch_records
from analytics.ingestion.enrich import UserAgentCache
from analytics.ingestion.pipeline import Enricher
from analytics.ingestion.schemas import EventCreateSchema
from analytics.privacy.visitor import Sender, sender, site_host, strip_referrer, visitor_hash
from support import ROOT, SRC, Server, connect, drop_schema, new_schema_name

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
OTHER_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"


@pytest.fixture(scope="module")
def srv(db_url):
    """Two workers; proxies trusted only in 10.0.0.0/8 (the test client, 127.0.0.1, is not one);
    salts re-read every 0.3 s so that a rotation shows quickly."""
    schema = new_schema_name("privacy")
    s = Server(db_url, schema, workers=2, env={"TRUSTED_PROXIES": "10.0.0.0/8",
                                               "VISITOR_SALT_REFRESH_SECONDS": "0.3"}).start()
    conn = connect(db_url, schema)
    try:
        yield {"url": s.url, "conn": conn, "schema": schema, "db_url": db_url, "server": s}
    finally:
        conn.close()
        s.stop()
        drop_schema(db_url, schema)


def post(url: str, body: dict, **headers) -> dict:
    # A new connection each time: either worker may answer.
    r = httpx.post(url + "/api/events/", json=body, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def stored(conn, event_id: str) -> tuple:
    return conn.execute("SELECT ip_address, visitor_id, referrer, referrer_host FROM events WHERE id = %s",
                        (event_id,)).fetchone()


def vid(srv, body=None, **headers) -> int:
    ev = post(srv["url"], {"page": "/p", "user_agent": UA, **(body or {})}, **headers)
    return stored(srv["conn"], ev["id"])[1]


def test_stored_row_has_no_ip_and_a_visitor_id_every_worker_agrees_on(srv):
    ev = post(srv["url"], {"page": "/no-ip", "user_agent": UA, "ip_address": "203.0.113.7"})
    assert ev["ip_address"] is None  # seed 004's field is there, empty: nothing is stored
    ip, visitor, _, _ = stored(srv["conn"], ev["id"])
    assert ip is None and isinstance(visitor, int)
    # the same person (address, browser, site) the same day: the same id, whichever worker answers
    assert {vid(srv) for _ in range(8)} == {visitor}
    # ip_address from a browser (no ingest key) is ignored: it does not change the id either
    assert vid(srv, {"ip_address": "198.51.100.1"}) == visitor
    # another browser, another site: other ids
    assert vid(srv, {"user_agent": OTHER_UA}) != visitor
    assert vid(srv, Origin="https://shop.example") != visitor
    assert vid(srv, Origin="https://shop.example") == vid(srv, Origin="https://shop.example:8443")
    (n,) = srv["conn"].execute("SELECT count(*) FROM events WHERE ip_address IS NOT NULL").fetchone()
    assert n == 0


def test_body_ip_address_counts_from_an_ingest_key_on_the_real_server(srv):
    """A server-side sender with an `ingest` key reports its own users' addresses: their
    visitor ids follow the body's ip_address. The same body from a browser, or with a read key,
    is the sender's own address. Nothing is stored (STORE_IP is off)."""
    keys = srv["server"].key
    ingest = {"Authorization": f"Bearer {keys['ingest']}"}
    browser = vid(srv)
    a1 = vid(srv, {"ip_address": "192.0.2.10"}, **ingest)
    a2 = vid(srv, {"ip_address": "192.0.2.10"}, **ingest)
    b = vid(srv, {"ip_address": "192.0.2.11"}, **ingest)
    assert a1 == a2 and len({a1, b, browser}) == 3
    assert vid(srv, {"ip_address": "192.0.2.10"}, Authorization=f"Bearer {keys['read']}") == browser
    (n,) = srv["conn"].execute("SELECT count(*) FROM events WHERE ip_address IS NOT NULL").fetchone()
    assert n == 0


def test_spoofed_forwarded_headers_from_an_untrusted_peer_change_nothing(srv):
    plain = vid(srv)
    assert vid(srv, **{"X-Forwarded-For": "198.51.100.23"}) == plain
    assert vid(srv, **{"X-Forwarded-For": "198.51.100.24, 10.0.0.1"}) == plain
    assert vid(srv, Forwarded="for=198.51.100.25") == plain


def test_batch_events_get_the_same_visitor_id_as_single_ones(srv):
    single = vid(srv)
    r = httpx.post(srv["url"] + "/api/events/batch", timeout=10, json=[
        {"page": "/b1", "user_agent": UA}, {"page": "/b2", "user_agent": UA, "ip_address": "192.0.2.1"}])
    assert r.status_code == 201, r.text
    rows = [stored(srv["conn"], i) for i in r.json()["ids"]]
    assert [(ip, v) for ip, v, _, _ in rows] == [(None, single), (None, single)]


def test_visitor_id_changes_when_the_days_salt_rotates(srv):
    conn = srv["conn"]
    (days,) = conn.execute("SELECT array_agg(day ORDER BY day) FROM visitor_salts").fetchone()
    today = datetime.now(timezone.utc).date()
    assert days == [today, today + timedelta(days=1)]  # today's, and tomorrow's ready in advance
    before = vid(srv)
    run = subprocess.run([sys.executable, "-m", "analytics", "privacy", "rotate"], cwd=ROOT,
                         env={**os.environ, "DATABASE_URL": srv["db_url"], "DB_SCHEMA": srv["schema"],
                              "PYTHONPATH": str(SRC)}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 10
    while (after := vid(srv)) == before:
        assert time.monotonic() < deadline, "the new salt was not picked up"
        time.sleep(0.1)
    time.sleep(1)  # every worker has refreshed by now: they agree on the new id
    assert {vid(srv) for _ in range(8)} == {after}


def test_salts_older_than_yesterday_are_deleted(srv):
    conn = srv["conn"]
    today = datetime.now(timezone.utc).date()
    conn.execute("INSERT INTO visitor_salts (day, salt) VALUES (%s, 'x'), (%s, 'y')",
                 (today - timedelta(days=2), today - timedelta(days=1)))
    deadline = time.monotonic() + 10
    while conn.execute("SELECT count(*) FROM visitor_salts WHERE day = %s",
                       (today - timedelta(days=2),)).fetchone() != (0,):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # yesterday's lives on until tomorrow (48 h after it was made)
    assert conn.execute("SELECT count(*) FROM visitor_salts WHERE day = %s",
                        (today - timedelta(days=1),)).fetchone() == (1,)


@pytest.mark.parametrize("referrer, kept, host", [
    ("https://www.google.com/search?q=secret#frag", "https://www.google.com/search", "google.com"),
    ("https://mail.example/inbox#token=abc?x=1", "https://mail.example/inbox", "mail.example"),
    ("https://news.example/", "https://news.example/", "news.example"),
    ("android-app://com.example?u=me@example.com", "android-app://com.example", "com.example"),
])
def test_referrer_is_stored_without_query_and_fragment(srv, referrer, kept, host):
    ev = post(srv["url"], {"page": "/ref", "referrer": referrer})
    assert ev["referrer"] == kept
    assert stored(srv["conn"], ev["id"])[2:] == (kept, host)
    r = httpx.post(srv["url"] + "/api/events/batch", json=[{"page": "/ref", "referrer": referrer}], timeout=10)
    assert stored(srv["conn"], r.json()["ids"][0])[2:] == (kept, host)


def test_trusted_proxy_forwarded_address_is_used_and_stored_with_store_ip(db_url):
    schema = new_schema_name("privacy_proxy")
    s = Server(db_url, schema, env={"TRUSTED_PROXIES": "127.0.0.1", "STORE_IP": "true"}).start()
    try:
        conn = connect(db_url, schema)
        a = post(s.url, {"page": "/x", "user_agent": UA}, **{"X-Forwarded-For": "1.1.1.1, 198.51.100.7"})
        b = post(s.url, {"page": "/x", "user_agent": UA}, **{"X-Forwarded-For": "198.51.100.8"})
        c = post(s.url, {"page": "/x", "user_agent": UA}, Forwarded="for=198.51.100.7")
        d = post(s.url, {"page": "/x", "user_agent": UA, "ip_address": "192.0.2.9"})
        rows = {k: stored(conn, ev["id"]) for k, ev in zip("abcd", (a, b, c, d))}
        assert a["ip_address"] == "198.51.100.7"  # seed 004's field, filled when STORE_IP=true
        assert [rows[k][0] for k in "abcd"] == ["198.51.100.7", "198.51.100.8", "198.51.100.7", "127.0.0.1"]
        assert rows["a"][1] == rows["c"][1] != rows["b"][1]  # the forwarded address is who it is
        assert rows["d"][1] not in (rows["a"][1], rows["b"][1])
        got = httpx.get(f"{s.url}/api/events/{a['id']}/", headers=s.headers).json()
        assert got["ip_address"] == "198.51.100.7" and "visitor_id" not in got
        conn.close()
    finally:
        s.stop()
        drop_schema(db_url, schema)


def test_access_log_has_a_client_hash_not_the_address(db_url):
    schema = new_schema_name("privacy_log")
    s = Server(db_url, schema, env={"ACCESS_LOG": "true", "LOG_FORMAT": "json"}).start()
    try:
        for rid in ("log-a", "log-b"):
            assert httpx.post(s.url + "/api/events/", json={"page": "/l"},
                              headers={"X-Request-Id": rid}).status_code == 201
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(ln) for ln in s.log_path.read_text().splitlines() if ln.startswith("{")]
            access = {r["request_id"]: r for r in lines if r.get("logger") == "analytics.access"
                      and r.get("request_id", "").startswith("log-")}
            if len(access) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        s.stop()
        drop_schema(db_url, schema)
    assert len(access["log-a"]["client"]) == 16 and access["log-a"]["client"] == access["log-b"]["client"]
    assert not any("127.0.0.1" in json.dumps(r) for r in lines)  # (gunicorn's own lines name its bind address)


def test_scrub_removes_stored_ips_while_ingestion_goes_on(srv):
    conn, url = srv["conn"], srv["url"]
    now = datetime.now(timezone.utc)
    # Rows as an older version stored them: an IP each, over 11 hours (two 6 h windows, several
    # batches each), in pairs at the same instant (a batch may end between the two).
    conn.execute("""INSERT INTO events (id, time, page, ip_address)
        SELECT gen_random_uuid(), %s - (g / 2) * interval '26 seconds', '/old', '203.0.113.' || (g %% 250)
        FROM generate_series(1, 3001) g""", (now - timedelta(minutes=1),))
    stop, answers = threading.Event(), []

    def ingest():
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                answers.append(c.post("/api/events/", json={"page": "/during-scrub"}).status_code)

    t = threading.Thread(target=ingest)
    t.start()
    try:
        run = subprocess.run([sys.executable, "-m", "analytics", "privacy", "scrub", "--batch", "199",
                              "--window", "6h"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "DATABASE_URL": srv["db_url"], "DB_SCHEMA": srv["schema"],
                                  "PYTHONPATH": str(SRC)})
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    assert run.returncode == 0, run.stderr
    assert "done: 3001 IP addresses removed" in run.stdout, run.stdout
    assert run.stdout.count("IP addresses removed") >= 3  # progress, window by window
    assert answers and set(answers) == {201}, set(answers)
    assert conn.execute("SELECT count(*) FROM events WHERE ip_address IS NOT NULL").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM events WHERE page = '/old'").fetchone() == (3001,)
    assert conn.execute("SELECT count(*) FROM events WHERE page = '/during-scrub'").fetchone() == (len(answers),)
    again = subprocess.run([sys.executable, "-m", "analytics", "privacy", "scrub"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "DATABASE_URL": srv["db_url"], "DB_SCHEMA": srv["schema"],
                                "PYTHONPATH": str(SRC)})
    assert again.returncode == 0 and "nothing to do" in again.stdout  # idempotent


# -- the rules, without a server -------------------------------------------------------------

def _scope(*headers, peer="203.0.113.5"):
    return {"client": (peer, 1), "headers": [(k.encode(), v.encode()) for k, v in headers]}


def test_body_ip_counts_only_from_an_ingest_principal():
    enricher = Enricher(UserAgentCache(10), timedelta(days=7), timedelta(seconds=60))
    ev = EventCreateSchema.model_validate({"page": "/", "ip_address": "192.0.2.1", "user_agent": UA})
    salt = b"s" * 32

    def record(principal):
        scope = _scope(("host", "site.example"))
        if principal is not None:
            set_principal(scope, principal)
        return enricher.to_record(ev, sender=sender(scope, (), salt, store_ip=True))

    browser, reader = record(None), record(Principal("key", "dash", frozenset({READ})))
    server_side = record(Principal("key", "backend", frozenset({INGEST})))
    assert browser.ip_address == reader.ip_address == "203.0.113.5"
    assert browser.visitor_id == reader.visitor_id == visitor_hash(salt, "203.0.113.5", UA, "site.example")
    assert server_side.ip_address == "192.0.2.1"
    assert server_side.visitor_id == visitor_hash(salt, "192.0.2.1", UA, "site.example")
    no_store = enricher.to_record(ev, sender=Sender("203.0.113.5", "site.example", "", salt, False, False))
    assert no_store.ip_address is None and no_store.visitor_id == browser.visitor_id


def test_a_batch_gives_each_event_what_it_would_get_alone():
    """bodies.batch_records remembers each (address, user agent)'s visitor id and country for
    the rest of the batch: with several of each, repeated and interleaved, from a server-side
    sender, every event still gets its own."""
    enricher = Enricher(UserAgentCache(10), timedelta(days=7), timedelta(seconds=60))
    salt = b"m" * 32
    who = Sender("203.0.113.5", "site.example", "header-ua", salt, False, True)
    items = [{"page": f"/{i}", "ip_address": ip, **({"user_agent": ua} if ua else {})}
             for i, (ip, ua) in enumerate([("8.8.8.8", UA), ("77.88.8.8", UA), ("8.8.8.8", "other"),
                                           ("", UA), ("77.88.8.8", UA), ("8.8.8.8", None), ("8.8.8.8", UA)])]
    got = batch_records(json.dumps(items).encode(), "application/json", 100, enricher, who)
    alone = [enricher.to_record(EventCreateSchema.model_validate(i), sender=who) for i in items]
    assert [(r.visitor_id, r.country) for r in got] == [(r.visitor_id, r.country) for r in alone]
    assert [r.country for r in got] == ["US", "RU", "US", "", "RU", "US", "US"]
    assert len({r.visitor_id for r in got}) == 5  # (8.8.8.8, UA) twice, (77.88.8.8, UA) twice


def test_site_host_and_referrer_rules():
    assert site_host(_scope(("origin", "https://Shop.Example:8443"), ("host", "api.example"))) == "shop.example"
    assert site_host(_scope(("origin", "null"), ("host", "api.example:8002"))) == "api.example"
    assert site_host(_scope()) == ""
    assert strip_referrer("https://a.example/p?q=1#f") == "https://a.example/p"
    assert strip_referrer("https://a.example/p") == "https://a.example/p"
    salt = b"k" * 32
    assert visitor_hash(salt, "1.2.3.4", UA, "a") != visitor_hash(b"j" * 32, "1.2.3.4", UA, "a")
    assert -2 ** 63 <= visitor_hash(salt, "1.2.3.4", UA, "a") < 2 ** 63
