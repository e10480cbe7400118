"""GET /js/tracker.js (caching, ETag, 304, gzip) and the tracker's transport: POST /api/events/
and /batch take JSON sent as text/plain (sendBeacon and fetch send a string body that way: no
CORS preflight), on both ways a route is served."""
from __future__ import annotations

import json
import uuid

import httpx
import pytest

pytestmark = pytest.mark.both_paths


def test_tracker_js_is_cacheable_and_revalidates_with_its_etag(server):
    r = httpx.get(server.url + "/js/tracker.js", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "max-age=86400" in r.headers["cache-control"] and "public" in r.headers["cache-control"]
    etag = r.headers["etag"]
    assert etag.startswith('"') and b"sendBeacon" in r.content
    again = httpx.get(server.url + "/js/tracker.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    weak = httpx.get(server.url + "/js/tracker.js", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other = httpx.get(server.url + "/js/tracker.js", headers={"If-None-Match": '"not-it"'})
    assert other.status_code == 200 and other.content == r.content


def test_tracker_js_is_sent_gzipped_within_budget(server):
    with httpx.Client() as c:
        r = c.get(server.url + "/js/tracker.js", headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert int(r.headers["content-length"]) <= 1024
        assert "Accept-Encoding" in r.headers["vary"]
        plain = c.get(server.url + "/js/tracker.js", headers={"Accept-Encoding": "identity"})
        assert r.content == plain.content  # httpx decompressed it


def test_single_event_as_text_plain(server, db):
    page = f"/text-plain/{uuid.uuid4().hex}"
    body = json.dumps({"page": page, "description": "Signup"})
    r = httpx.post(server.url + "/api/events/", content=body,
                   headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://site.example"})
    assert r.status_code == 201, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    assert db.execute("SELECT description FROM events WHERE page = %s", (page,)).fetchall() == [("Signup",)]


def test_batch_as_text_plain(server, db):
    page = f"/text-plain-batch/{uuid.uuid4().hex}"
    body = json.dumps([{"page": page}, {"page": page, "duration": 3}])
    r = httpx.post(server.url + "/api/events/batch", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == 2
    assert db.execute("SELECT count(*) FROM events WHERE page = %s", (page,)).fetchone()[0] == 2


def test_text_plain_that_is_not_json_is_a_422_naming_the_body(server):
    r = httpx.post(server.url + "/api/events/", content="page=/x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body"]


def test_openapi_documents_text_plain_and_the_tracker(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in ("/api/events/", "/api/events/batch"):
        assert "text/plain" in spec["paths"][path]["post"]["requestBody"]["content"]
    assert set(spec["paths"]["/js/tracker.js"]["get"]["responses"]) >= {"200", "304"}
