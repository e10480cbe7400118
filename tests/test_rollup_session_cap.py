"""A session's stored rollup entries are capped (issue 9, "a session's rollup entries grow
without limit"): rollup_sessions.entries holds at most SESSION_MAX_ENTRIES '<quarter>|<page>'
entries, enforced by the CHECK constraint rollup_sessions_entries_cap. An event that would take
its session past the cap is refused and stores nothing; events that add no entry, and other
sessions, go on; unique sessions stay exact for everything stored."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from support import Server, connect, drop_schema, new_schema_name

CAP = 5000  # analytics.rollups.sessions.SESSION_MAX_ENTRIES


@pytest.fixture(scope="module")
def env(db_url):
    schema = new_schema_name("sescap")
    srv = Server(db_url, schema, workers=1, env={"STATS_CACHE_TTL_SECONDS": "0"}).start()
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=120) as client:
            conn = connect(db_url, schema)
            yield client, conn
            conn.close()
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def _entries(conn, sid: str) -> int:
    row = conn.execute("SELECT cardinality(entries) FROM rollup_sessions WHERE session_id = %s",
                       (sid,)).fetchone()
    return row[0] if row else 0


FILL = "INSERT INTO rollup_sessions (session_id, entries) VALUES (%s, array_fill(%s::text, ARRAY[%s]))"


def test_the_cap_is_a_named_check_constraint(env):
    _, conn = env
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        conn.execute(FILL, (f"direct-{uuid.uuid4().hex[:6]}", "1|/x", CAP + 1))
    assert exc.value.diag.constraint_name == "rollup_sessions_entries_cap"
    # ... and bounds the bytes too (a few hundred 6 KB pages)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(FILL, (f"direct-{uuid.uuid4().hex[:6]}", "1|/" + "p" * 6000, 400))
    conn.execute(FILL, (f"direct-{uuid.uuid4().hex[:6]}", "1|/x", CAP))  # at the cap: fine


def test_a_session_past_the_cap_is_refused_and_nothing_else_is(env):
    client, conn = env
    sid = f"forever-{uuid.uuid4().hex[:6]}"
    at = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    z = at.isoformat().replace("+00:00", "Z")
    # CAP distinct pages in one quarter hour: CAP entries, all accepted.
    for lo in range(0, CAP, 1000):
        r = client.post("/api/events/batch", json=[{"page": f"/p/{i}", "session_id": sid, "time": z}
                                                   for i in range(lo, lo + 1000)])
        assert r.status_code == 201, r.text
    assert _entries(conn, sid) == CAP
    # One more distinct page: that event's 422 naming session_id, in our words.
    r = client.post("/api/events/", json={"page": "/one-too-many", "session_id": sid, "time": z})
    assert r.status_code == 422, r.text
    assert ["body", "session_id"] in [e["loc"] for e in r.json()["detail"]], r.text
    assert "violates" not in r.text and "rollup_sessions" not in r.text  # no database text
    # ... and in a batch, the item is named; the batch is not stored.
    r = client.post("/api/events/batch", json=[{"page": "/p/8", "session_id": sid, "time": z},
                                               {"page": "/one-too-many", "session_id": sid, "time": z}])
    assert r.status_code == 422, r.text
    assert ["body", 1, "session_id"] in [e["loc"] for e in r.json()["detail"]], r.text
    assert conn.execute("SELECT count(*) FROM events WHERE page = '/one-too-many'").fetchone() == (0,)
    assert _entries(conn, sid) == CAP
    # An event that adds no entry (a page and quarter hour it already has) is stored...
    r = client.post("/api/events/", json={"page": "/p/7", "session_id": sid, "time": z})
    assert r.status_code == 201, r.text
    assert conn.execute("SELECT count(*) FROM events WHERE page = '/p/8'").fetchone() == (1,)  # the fill's only
    # ... and so is another session's event, in the same quarter hour and page.
    other = f"other-{uuid.uuid4().hex[:6]}"
    r = client.post("/api/events/", json={"page": "/one-too-many", "session_id": other, "time": z})
    assert r.status_code == 201, r.text
    # unique sessions stay exact for what was stored
    params = {"start": z, "end": (at + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
              "metrics": ["events", "unique_sessions"], "group_by": "page", "page": ["/p/7", "/one-too-many"]}
    body = client.get("/api/v1/stats/breakdown", params=params).json()
    assert "rollup_ses" in body["meta"]["sources"]["unique_sessions"], body["meta"]
    got = {row["page"]: (row["events"], row["unique_sessions"]) for row in body["results"]}
    assert got == {"/p/7": (2, 1), "/one-too-many": (1, 1)}
