"""The access log: one JSON line per request, with the request id, on the production server."""
from __future__ import annotations

import json
import time

import httpx

from support import Server


def _access_lines(srv: Server) -> list[dict]:
    out = []
    for line in srv.log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("logger") == "analytics.access":
            out.append(rec)
    return out


def _wait_for(srv: Server, pred, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _access_lines(srv)
        if pred(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_json_access_line_per_request(db_url, schema):
    srv = Server(db_url, schema, env={"ACCESS_LOG": "true", "LOG_FORMAT": "json"}).start()
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers) as c:
            assert c.post("/api/events/", json={"page": "/logged"},
                          headers={"X-Request-Id": "acc-1"}).status_code == 201
            assert c.get("/api/v1/stats/totals", params={"interval": "nope"},
                         headers={"X-Request-Id": "acc-2"}).status_code == 422
            assert c.get('/healthz?q="x\\y', headers={"X-Request-Id": "acc-3"}).status_code == 200
        lines = _wait_for(srv, lambda ls: {"acc-1", "acc-2", "acc-3"} <= {r.get("request_id") for r in ls})
    finally:
        srv.stop()
    by_id = {r.get("request_id"): r for r in lines}
    post, bad, health = by_id["acc-1"], by_id["acc-2"], by_id["acc-3"]
    assert (post["method"], post["path"], post["status"]) == ("POST", "/api/events/", 201)
    assert (bad["method"], bad["path"], bad["status"]) == ("GET", "/api/v1/stats/totals", 422)
    assert health["path"] == "/healthz" and health["status"] == 200
    for r in (post, bad, health):
        assert r["level"] == "info" and r["msg"] == "request" and r["ts"].endswith("+00:00")
        assert isinstance(r["duration_ms"], (int, float)) and r["duration_ms"] >= 0


def test_access_log_off_and_text_format(db_url, schema):
    srv = Server(db_url, schema, env={"ACCESS_LOG": "true", "LOG_FORMAT": "text"}).start()
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers) as c:
            assert c.get("/healthz").status_code == 200
        deadline = time.monotonic() + 10
        while "analytics.access request" not in srv.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.1)
    finally:
        srv.stop()
    srv = Server(db_url, schema, env={"ACCESS_LOG": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers) as c:
            assert c.get("/healthz", headers={"X-Request-Id": "quiet-1"}).status_code == 200
    finally:
        srv.stop()
    assert "quiet-1" not in srv.log_path.read_text(errors="replace")
