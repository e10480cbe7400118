"""The answer cache: repeated identical queries are served from memory, and a new event still
shows up within a few seconds (STATS_CACHE_TTL_SECONDS, default 2)."""
from __future__ import annotations

import time

import httpx
import pytest

from support import Server, drop_schema, new_schema_name


@pytest.fixture(scope="module")
def client(db_url):
    schema = new_schema_name("statscache")
    srv = Server(db_url, schema).start()  # default settings: cache on, 2 s
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
            yield c
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def _events(client) -> tuple[int, str]:
    r = client.get("/api/v1/stats/totals", params={"metrics": ["events", "unique_sessions"]})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["events"], r.headers["x-cache"]


def test_cached_but_fresh_within_seconds(client):
    assert client.post("/api/events/", json={"page": "/c", "session_id": "a"}).status_code == 201
    n, first = _events(client)
    again, second = _events(client)
    assert (n, first, second) == (1, "miss", "hit") and again == 1
    assert client.post("/api/events/", json={"page": "/c", "session_id": "b"}).status_code == 201
    deadline = time.monotonic() + 6
    seen = []
    while time.monotonic() < deadline:
        count, how = _events(client)
        seen.append((count, how))
        if count == 2:
            break
        time.sleep(0.2)
    assert seen[-1][0] == 2, seen
    assert seen[0] == (1, "hit")  # the cache did answer in between
    # Different parameters are different entries.
    r = client.get("/api/v1/stats/totals", params={"metrics": "events", "page": "/c"})
    assert r.headers["x-cache"] == "miss" and r.json()["results"][0]["events"] == 2
