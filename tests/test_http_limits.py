"""What a request may take before the app sees it (web/http.py, the gunicorn worker's protocol):
found by the hostile-client review, where one client stalled a worker's event loop for seconds
with a header of tens of megabytes, and held connections forever by sending a byte at a time.

A server with HTTP_HEAD_TIMEOUT_SECONDS and HTTP_BODY_TIMEOUT_SECONDS of 1 s. Each probe would
hang on the old protocol (the socket's own 15 s timeout then fails the test)."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from support import Server, drop_schema, new_schema_name


@pytest.fixture(scope="module")
def srv(db_url):
    schema = new_schema_name("httplimits")
    s = Server(db_url, schema, workers=1,
               env={"HTTP_HEAD_TIMEOUT_SECONDS": "1", "HTTP_BODY_TIMEOUT_SECONDS": "1"}).start()
    yield s
    s.stop()
    drop_schema(db_url, schema)


def _exchange(srv: Server, data: bytes) -> bytes:
    """Send `data`, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may close while a huge request is still being sent
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def _answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_huge_header_is_431_without_stalling_other_clients(srv):
    """10 MB in one header: refused once the head passes HTTP_MAX_HEAD_BYTES (64 KB), while
    another client's event is stored meanwhile."""
    others: list[int] = []
    t = threading.Thread(target=lambda: others.append(
        httpx.post(srv.url + "/api/events/", json={"page": "/meanwhile"}, timeout=15).status_code))
    t.start()
    status, body = _answer(_exchange(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000_000
                                     + b"\r\n\r\n"))
    t.join()
    assert status == 431 and body["error"] == "headers_too_large" and "HTTP_MAX_HEAD_BYTES" in body["detail"]
    assert others == [201]


def test_many_headers_past_the_limit_are_431(srv):
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))  # ~110 KB
    status, body = _answer(_exchange(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"))
    assert status == 431, body


def test_a_head_sent_too_slowly_is_408(srv):
    status, body = _answer(_exchange(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: "))
    assert status == 408 and "HTTP_HEAD_TIMEOUT_SECONDS" in body["detail"]


def test_a_body_sent_too_slowly_is_408(srv):
    status, body = _answer(_exchange(srv, b"POST /api/events/ HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"page\""))
    assert status == 408 and "HTTP_BODY_TIMEOUT_SECONDS" in body["detail"]


def test_a_connection_that_sends_nothing_is_closed(srv):
    assert _exchange(srv, b"") == b""


def test_big_bodies_and_kept_alive_connections_are_unaffected(srv):
    """A batch far over 64 KB (its head and body in the same reads) is stored; a kept-alive
    connection idle for longer than the head timeout still serves its next request."""
    batch = [{"page": f"/big/{i}", "description": "x" * 500} for i in range(1000)]  # ~540 KB
    r = httpx.post(srv.url + "/api/events/batch", json=batch, timeout=30)
    assert r.status_code == 201 and r.json()["stored"] == 1000, r.text[:300]
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/healthz").status_code == 200
        time.sleep(1.5)  # over HTTP_HEAD_TIMEOUT_SECONDS, under uvicorn's keep-alive (5 s)
        assert c.get("/healthz").status_code == 200


def test_bad_framing_is_a_json_400(srv):
    """What uvicorn's parser refuses (here a negative Content-Length) is answered in JSON, as every
    other error (uvicorn's own answer was text/plain)."""
    raw = _exchange(srv, b"POST /api/events/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}")
    status, body = _answer(raw)
    assert status == 400 and body["error"] == "bad_request" and b"application/json" in raw.split(b"\r\n\r\n")[0]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/js/tracker.js", "/dashboard"])
def test_head_is_answered_wherever_get_is(srv, path):
    """HEAD (uptime checkers, CDNs) gets GET's status and headers, and no body."""
    get = httpx.get(srv.url + path)
    head = httpx.head(srv.url + path)
    assert get.status_code == 200 and head.status_code == 200, head.text
    assert head.content == b"" and head.headers.get("content-type") == get.headers.get("content-type")


def test_head_of_a_read_needs_its_key_and_the_export_is_not_run_for_it(srv):
    assert httpx.head(srv.url + "/api/v1/stats/totals").status_code == 401
    assert httpx.head(srv.url + "/api/v1/stats/totals", headers=srv.headers).status_code == 200
    assert httpx.head(srv.url + "/api/v1/events/export", headers=srv.headers).status_code == 405
