"""Bodies over the limit and batches over BATCH_MAX_EVENTS are refused before they are parsed
into objects (issue 9: a 10 MB batch of `[{},{},…]` took 8 s of a worker, and parsing a body
takes several times its size in memory). Shown without timing anything: an oversized body is
answered before it has even been sent in full, and a batch of 1.3 million items costs the
worker no memory to speak of."""
from __future__ import annotations

import socket
import uuid

import httpx
import psycopg
import pytest

from support import Server, drop_schema, new_schema_name


@pytest.fixture(scope="module")
def srv(db_url):
    schema = new_schema_name("refuse")
    s = Server(db_url, schema).start()  # default limits, one worker
    yield s
    s.stop()
    drop_schema(db_url, schema)


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_oversized_body_is_refused_before_it_ends(srv):
    """5 MB of a chunked batch body, never finished: over MAX_BODY_BYTES (4 MB), so the answer
    comes while the client is still sending (a server that read to the end would never answer)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(b"POST /api/events/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"{}," * 21_000  # 63 KB
        try:
            for _ in range(80):  # 5 MB, and no terminating chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while we were still sending: what this test wants
        assert _status_line(sock) == "HTTP/1.1 413 Request Entity Too Large"


def test_single_event_over_its_limit_is_refused_by_its_length(srv):
    """Content-Length over MAX_EVENT_BYTES (64 KB): answered without reading the body at all."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(b"POST /api/events/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n{\"page\": \"/")
        assert _status_line(sock) == "HTTP/1.1 413 Request Entity Too Large"


def test_a_batch_of_a_million_items_costs_no_memory(srv):
    """1.3 million `{}` items (3.9 MB, under the body limit): 413 by count, and the worker's
    memory barely moves (parsing them took ~500 MB)."""
    before = httpx.get(srv.url + "/readyz", headers=srv.admin_headers).json()["process"]["rss_bytes"]
    body = b"[" + b",".join([b"{}"] * 1_300_000) + b"]"
    r = httpx.post(srv.url + "/api/events/batch", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text
    assert r.json()["detail"][0]["type"] == "too_many_events"
    after = httpx.get(srv.url + "/readyz", headers=srv.admin_headers).json()["process"]["rss_bytes"]
    assert after - before < 64 * 1024 * 1024, (before, after)


def test_ndjson_of_blank_lines_is_refused_by_its_line_count(srv, db_url):
    """One event and 3.9 million newlines (under MAX_BODY_BYTES): every pass over the lines cost
    the worker over a second while the limiter charged one event. Now a 413 `too_many_lines`
    (at most 2 lines per event of BATCH_MAX_EVENTS), found by counting newlines; nothing stored.
    Blank lines within that allowance are fine."""
    ndjson = {"content-type": "application/x-ndjson"}
    body = b'{"page": "/newlines"}' + b"\n" * 3_900_000
    r = httpx.post(srv.url + "/api/events/batch", content=body, headers=ndjson, timeout=30)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body"] and detail["type"] == "too_many_lines" and detail["limit"] == 2001, detail
    spaced = b"\n\n".join(b'{"page": "/spaced", "id": "%s"}' % str(uuid.uuid4()).encode()
                          for _ in range(1000)) + b"\n"
    r = httpx.post(srv.url + "/api/events/batch", content=spaced, headers=ndjson, timeout=30)
    assert r.status_code == 201 and r.json()["stored"] == 1000, r.text[:500]
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (srv.env["DB_SCHEMA"],))
        assert conn.execute("SELECT count(*) FROM events WHERE page = '/newlines'").fetchone()[0] == 0
