"""Database down and back, through a TCP proxy the test can cut: 503 JSON while it is down (in
bounded time), /healthz stays up, and the same server process recovers by itself."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from support import Server, TcpProxy, drop_schema, new_schema_name

HANG_BOUND_S = 15  # an answer, not a hang: generous, not a timing assertion


def worker_pids(srv: Server) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(srv.proc.pid)], capture_output=True,
                         text=True).stdout
    return {int(p) for p in out.split()}


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    r = fn(*args, **kwargs)
    return r, time.monotonic() - t0


def assert_503_json(r, elapsed: float) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "database_unavailable", r.text
    assert "psycopg" not in r.text and "connection" not in r.text.lower(), r.text
    assert elapsed < HANG_BOUND_S, (elapsed, r.text)


def poll(fn, ok, timeout: float = 60.0, every: float = 0.3):
    """Call fn until ok(result); return the last result (bounded loop)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if ok(last):
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s; last: {last!r}")


class FreezableProxy(TcpProxy):
    """Also simulates a network that silently drops traffic (no RST, no FIN): while frozen,
    nothing is forwarded, and new connections complete their handshake in the kernel's backlog
    but are never served, so only timeouts can help."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frozen = threading.Event()

    def freeze(self) -> None:
        self.frozen.set()
        self._up.clear()  # the accept loop pauses; the listener stays open

    def thaw(self) -> None:
        self.frozen.clear()
        self._up.set()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:  # type: ignore[override]
        TcpProxy._pipe(src, _Gate(dst, self))


class _Gate:
    """A socket whose sendall waits while the proxy is frozen."""

    def __init__(self, sock: socket.socket, proxy: FreezableProxy) -> None:
        self.sock, self.proxy = sock, proxy

    def sendall(self, data: bytes) -> None:
        while self.proxy.frozen.is_set() and not self.proxy._stop:
            time.sleep(0.05)
        self.sock.sendall(data)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)


@pytest.fixture()
def proxied(db_url, tmp_path):
    proxy = FreezableProxy.for_url(db_url).start()
    schema = new_schema_name("fault")
    srv = Server(proxy.url_through(db_url), schema, log_path=tmp_path / "server.log",
                 env={"DB_TIMEOUT": "2"})
    yield proxy, srv
    srv.stop()
    proxy.close()
    drop_schema(db_url, schema)


def test_database_down_and_back(proxied):
    proxy, srv = proxied
    srv.start()
    pids = worker_pids(srv)
    assert len(pids) == 1
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=HANG_BOUND_S + 15) as c:
        page = f"/fault/{uuid.uuid4().hex[:8]}"
        first = c.post("/api/events/", json={"page": page, "duration": 5})
        assert first.status_code == 201, first.text
        ev_id = first.json()["id"]
        assert c.get("/api/events/", params={"pages": page}).status_code == 200
        stats = {"page": page, "start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
        assert c.get("/api/v1/stats/totals", params=stats).status_code == 200

        proxy.cut()
        assert_503_json(*timed(c.post, "/api/events/", json={"page": page}))
        assert_503_json(*timed(c.get, "/api/events/", params={"pages": page}))
        assert_503_json(*timed(c.get, f"/api/events/{ev_id}/"))
        assert_503_json(*timed(c.get, "/api/v1/stats/totals", params=stats))
        assert_503_json(*timed(c.get, "/api/v1/stats/timeseries", params={**stats, "interval": "1 year"}))
        ready, elapsed = timed(c.get, "/readyz", headers=srv.admin_headers)
        assert ready.status_code == 503 and elapsed < HANG_BOUND_S
        assert ready.json()["database"] == "unreachable"
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/").status_code == 200
        # Still down: a second round answers the same way (nothing cached a broken state as ok).
        assert_503_json(*timed(c.post, "/api/events/", json={"page": page}))

        proxy.restore()
        poll(lambda: c.get("/readyz"), lambda r: r.status_code == 200)
        r = poll(lambda: c.post("/api/events/", json={"page": page, "duration": 7}),
                 lambda r: r.status_code == 201)
        assert r.json()["page"] == page
        assert c.get(f"/api/events/{ev_id}/").status_code == 200
        agg = c.get("/api/events/", params={"pages": page})
        assert agg.status_code == 200
        # The events refused with 503 were not stored behind the client's back.
        assert sum(b["count"] for b in agg.json()) == 2, (agg.json(), srv.log())
        totals = poll(lambda: c.get("/api/v1/stats/totals", params=stats), lambda r: r.status_code == 200)
        assert totals.json()["results"][0]["events"] == 2
    # The same process answered throughout: no worker restart, master alive.
    assert srv.proc.poll() is None
    assert worker_pids(srv) == pids


def test_repeated_outages(proxied):
    proxy, srv = proxied
    srv.start()
    pids = worker_pids(srv)
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=HANG_BOUND_S + 15) as c:
        for i in range(3):
            proxy.cut()
            assert_503_json(*timed(c.post, "/api/events/", json={"page": f"/rep/{i}"}))
            proxy.restore()
            poll(lambda: c.post("/api/events/", json={"page": f"/rep/{i}"}),
                 lambda r: r.status_code == 201)
    assert worker_pids(srv) == pids


def test_server_started_while_database_unreachable(proxied):
    proxy, srv = proxied
    proxy.cut()
    srv.start(wait_ready=False)
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=HANG_BOUND_S + 15) as c:
        poll(lambda: c.get("/healthz"), lambda r: r.status_code == 200, timeout=30)
        assert_503_json(*timed(c.post, "/api/events/", json={"page": "/early"}))
        assert_503_json(*timed(c.get, "/api/events/"))
        assert_503_json(*timed(c.get, f"/api/events/{uuid.uuid4()}/"))
        ready = c.get("/readyz")
        assert ready.status_code == 503
        # The bootstrap says, once per attempt, that it is retrying.
        poll(lambda: Path(srv.log_path).read_text(errors="replace").count("database not reachable"),
             lambda n: n >= 2, timeout=20)
        assert srv.proc.poll() is None

        proxy.restore()
        srv.wait_ready(timeout=45)
        r = c.post("/api/events/", json={"page": "/late"})
        assert r.status_code == 201, r.text
        # (the keys exist once the schema does: the client was made before)
        assert c.get(f"/api/events/{r.json()['id']}/", headers=srv.headers).status_code == 200
    log = Path(srv.log_path).read_text(errors="replace")
    assert "schema ready" in log
    assert "attempt 1" in log and "attempt 2" in log


def test_silent_network_partition_is_bounded(proxied):
    """Packets dropped rather than refused: every DB endpoint still answers 503 in bounded time."""
    proxy, srv = proxied
    srv.start()
    pids = worker_pids(srv)
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=HANG_BOUND_S + 15) as c:
        first = c.post("/api/events/", json={"page": "/partition"})
        assert first.status_code == 201
        proxy.freeze()
        assert_503_json(*timed(c.post, "/api/events/", json={"page": "/partition"}))
        assert_503_json(*timed(c.get, "/api/events/", params={"pages": "/partition"}))
        assert_503_json(*timed(c.get, f"/api/events/{first.json()['id']}/"))
        assert_503_json(*timed(c.get, "/api/v1/stats/totals", params={"page": "/partition"}))
        ready, elapsed = timed(c.get, "/readyz")
        assert ready.status_code == 503 and elapsed < HANG_BOUND_S
        assert c.get("/healthz").status_code == 200
        proxy.thaw()
        poll(lambda: c.post("/api/events/", json={"page": "/partition"}), lambda r: r.status_code == 201)
        poll(lambda: c.get("/readyz"), lambda r: r.status_code == 200)
    assert worker_pids(srv) == pids


def test_statement_timeout_is_a_query_timeout_not_an_outage(db_url, tmp_path):
    """The database is up but a statement waits too long (here: a lock held by the test). The
    answer is a 503 that says so, not 'database unavailable', and /readyz stays 200."""
    from support import connect

    schema = new_schema_name("stmt")
    srv = Server(db_url, schema, env={"DB_STATEMENT_TIMEOUT_MS": "1000", "READ_STATEMENT_TIMEOUT_MS": "1000"},
                 log_path=tmp_path / "s.log")
    try:
        srv.start()
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=HANG_BOUND_S + 15) as c:
            ev = c.post("/api/events/", json={"page": "/locked"}).json()
            with connect(db_url, schema) as locker:
                with locker.transaction():
                    locker.execute(f'LOCK TABLE "{schema}".events IN ACCESS EXCLUSIVE MODE')
                    r, elapsed = timed(c.get, f"/api/events/{ev['id']}/")
                    assert r.status_code == 503, r.text
                    assert r.json()["error"] == "query_timeout", r.text
                    assert elapsed < HANG_BOUND_S
                    assert c.get("/readyz").status_code == 200
            assert c.get(f"/api/events/{ev['id']}/").status_code == 200
    finally:
        srv.stop()
        drop_schema(db_url, schema)
