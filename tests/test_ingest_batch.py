"""POST /api/events/batch (JSON array and NDJSON) and idempotency on (id, time), single and batch,
against the session server and the real database."""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

pytestmark = pytest.mark.both_paths

NDJSON = {"content-type": "application/x-ndjson"}


def ev(page: str | None = None, **kw) -> dict:
    return {"page": page or f"/batch/{uuid.uuid4().hex[:8]}", **kw}


def keyed(**kw) -> dict:
    """An event with a client-supplied id and time (an idempotency key)."""
    t = datetime.now(timezone.utc) - timedelta(minutes=5)
    return ev(id=str(uuid.uuid4()), time=t.isoformat(), **kw)


def count(db, ids) -> int:
    return db.execute("SELECT count(*) FROM events WHERE id = ANY(%s::uuid[])", ([str(i) for i in ids],)
                      ).fetchone()[0]


def ndjson(items) -> bytes:
    return ("\n".join(json.dumps(i) for i in items) + "\n").encode()


# -- happy paths ---------------------------------------------------------------------------------

def test_json_array_stores_all_and_answers_ids(client, db):
    items = [ev(user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0", duration=i)
             for i in range(50)]
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"] == 50 and body["duplicates"] == 0 and body["duplicate_indexes"] == []
    assert len(body["ids"]) == 50 and len(set(body["ids"])) == 50
    assert count(db, body["ids"]) == 50
    # Same enrichment as the single path, in request order.
    rows = dict(db.execute("SELECT id::text, duration FROM events WHERE id = ANY(%s::uuid[])",
                           (body["ids"],)).fetchall())
    assert [rows[i] for i in body["ids"]] == list(range(50))
    (os_name,) = db.execute("SELECT DISTINCT os FROM events WHERE id = ANY(%s::uuid[])",
                            (body["ids"],)).fetchone()
    assert os_name == "Windows"


def test_ndjson_stores_all(client, db):
    items = [ev() for _ in range(10)]
    body = ndjson(items).replace(b"\n", b"\r\n", 1) + b"\n\n"  # CRLF and blank lines are fine
    r = client.post("/api/events/batch", content=body, headers=NDJSON)
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == 10
    assert count(db, r.json()["ids"]) == 10


def test_ndjson_content_type_with_parameters(client, db):
    r = client.post("/api/events/batch", content=ndjson([ev(), ev()]),
                    headers={"content-type": "application/x-ndjson; charset=utf-8"})
    assert r.status_code == 201, r.text
    assert count(db, r.json()["ids"]) == 2


def test_full_batch_at_the_limit(client, db):
    items = [ev() for _ in range(1000)]
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == 1000
    assert count(db, r.json()["ids"]) == 1000


# -- all or nothing ------------------------------------------------------------------------------

def test_one_bad_item_stores_nothing_and_names_it(client, db):
    items = [keyed() for _ in range(20)]
    items[7]["duration"] = -5
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_error"
    assert [e["loc"] for e in body["detail"]] == [["body", 7, "duration"]]
    assert "greater than or equal" in body["detail"][0]["msg"]
    assert count(db, [i["id"] for i in items]) == 0


def test_every_bad_item_is_listed(client, db):
    now = datetime.now(timezone.utc)
    items = [keyed() for _ in range(8)]
    items[0]["page"] = ""
    items[2]["ip_address"] = "999.1.1.1"
    items[3] = "not an object"
    items[5]["time"] = (now - timedelta(days=400)).isoformat()  # the Enricher's window
    items[6]["time"] = (now + timedelta(days=1)).isoformat()
    items[7]["page"] = "/a\x00b"
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert locs == [["body", 0, "page"], ["body", 2, "ip_address"], ["body", 3],
                    ["body", 5, "time"], ["body", 6, "time"], ["body", 7, "page"]]
    assert count(db, [i["id"] for i in items if isinstance(i, dict)]) == 0


def test_item_valid_in_shape_but_outside_the_time_window(client, db):
    """Every item passes the model (the one-call parse succeeds); one fails the Enricher's time
    window: still a 422 naming it, and nothing written."""
    now = datetime.now(timezone.utc)
    items = [keyed() for _ in range(6)]
    items[4]["time"] = (now - timedelta(days=400)).isoformat()
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", 4, "time"]]
    assert count(db, [i["id"] for i in items]) == 0
    # An escaped NUL takes the item-by-item path too, and is named.
    items = [keyed() for _ in range(3)]
    items[1]["referrer"] = "https://x\x00.example"
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [["body", 1, "referrer"]]
    assert count(db, [i["id"] for i in items]) == 0


def test_ndjson_bad_item_names_index_and_line(client, db):
    items = [keyed() for _ in range(5)]
    items[3]["session_id"] = 12
    body = b"\n" + ndjson(items)  # a leading blank line: item 3 is on line 5
    r = client.post("/api/events/batch", content=body, headers=NDJSON)
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", 3, "session_id"] and err["line"] == 5
    assert count(db, [i["id"] for i in items]) == 0


def test_malformed_ndjson_line_is_named(client, db):
    items = [keyed() for _ in range(4)]
    lines = ndjson(items).split(b"\n")
    lines[2] = lines[2][:-3]  # truncate line 3
    r = client.post("/api/events/batch", content=b"\n".join(lines), headers=NDJSON)
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", 2] and err["line"] == 3 and err["type"] == "json_invalid"
    assert "line 3" in err["msg"]
    assert count(db, [i["id"] for i in items]) == 0


@pytest.mark.parametrize("raw, where", [
    (b'[{"page": "/a"},\n {"page": "/b"', "line 2"),
    (b'[{"page": "/a"}, {"page": "/b",}]', "line 1"),
    (b"\xff\xfe[]", "UTF-8"),
])
def test_malformed_json_array_is_422_naming_the_position(client, raw, where):
    r = client.post("/api/events/batch", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body"] and where in err["msg"]


@pytest.mark.parametrize("raw", [b'{"page": "/a"}', b'"x"', b"null", b"5"])
def test_json_that_is_not_an_array(client, raw):
    r = client.post("/api/events/batch", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]
    assert "array" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize("raw, headers", [(b"[]", {"content-type": "application/json"}),
                                          (b"", {"content-type": "application/json"}),
                                          (b"\n\n", NDJSON), (b"", NDJSON)])
def test_empty_batch_is_422(client, raw, headers):
    r = client.post("/api/events/batch", content=raw, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_over_the_limit_is_refused_naming_the_limit(client, db, fmt):
    items = [keyed() for _ in range(1001)]
    if fmt == "json":
        r = client.post("/api/events/batch", json=items)
    else:
        r = client.post("/api/events/batch", content=ndjson(items), headers=NDJSON)
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "batch_too_large"
    assert body["detail"][0]["loc"] == ["body"] and body["detail"][0]["limit"] == 1000
    assert "BATCH_MAX_EVENTS" in body["detail"][0]["msg"]
    assert count(db, [items[0]["id"], items[-1]["id"]]) == 0


# -- idempotency ---------------------------------------------------------------------------------

def test_single_retry_is_a_duplicate(client, db):
    e = keyed()
    first = client.post("/api/events/", json=e)
    assert first.status_code == 201, first.text
    assert first.json()["duplicate"] is False
    again = client.post("/api/events/", json=e)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True and again.json()["id"] == e["id"]
    assert count(db, [e["id"]]) == 1


def test_same_id_other_time_is_another_event(client, db):
    e = keyed()
    assert client.post("/api/events/", json=e).status_code == 201
    other = dict(e, time=(datetime.fromisoformat(e["time"]) - timedelta(seconds=1)).isoformat())
    assert client.post("/api/events/", json=other).status_code == 201
    assert count(db, [e["id"]]) == 2


def test_batch_retry_and_duplicates_inside_one_batch(client, db):
    a, b, c = keyed(), keyed(), keyed()
    assert client.post("/api/events/", json=a).status_code == 201  # already stored singly
    items = [a, b, b, c, dict(b, page="/same-key-other-body")]
    r = client.post("/api/events/batch", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["stored"], body["duplicates"]) == (2, 3)
    assert body["duplicate_indexes"] == [0, 2, 4]
    assert body["ids"] == [a["id"], b["id"], b["id"], c["id"], b["id"]]
    # The first occurrence wins.
    assert db.execute("SELECT page FROM events WHERE id = %s", (b["id"],)).fetchone()[0] == b["page"]
    # The whole batch again: nothing new, 200.
    again = client.post("/api/events/batch", json=items)
    assert again.status_code == 200, again.text
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 5)
    # And singly.
    r = client.post("/api/events/", json=c)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert count(db, [a["id"], b["id"], c["id"]]) == 3


def test_concurrent_identical_batches_store_once(client, db, server):
    items = [keyed() for _ in range(300)]
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: c.post("/api/events/batch", json=items), range(6)))
    assert all(r.status_code in (200, 201) for r in answers), [r.text for r in answers]
    assert sum(r.json()["stored"] for r in answers) == 300
    assert sum(r.json()["duplicates"] for r in answers) == 5 * 300
    assert count(db, [i["id"] for i in items]) == 300


def test_concurrent_single_retries_store_once(client, db, server):
    events = [keyed() for _ in range(40)]
    work = events * 4
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda e: c.post("/api/events/", json=e), work))
    assert all(r.status_code in (200, 201) for r in answers), [r.text for r in answers][:3]
    new = [r.json()["id"] for r in answers if r.status_code == 201]
    assert sorted(new) == sorted(e["id"] for e in events)  # exactly one 'new' per event
    assert count(db, [e["id"] for e in events]) == 40


def test_openapi_documents_the_batch_endpoint(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/events/batch"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/json", "application/x-ndjson", "text/plain"}  # text/plain: the tracker
    assert {"201", "413", "422", "503"} <= set(op["responses"])
