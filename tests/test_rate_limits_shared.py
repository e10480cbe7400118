"""Rate limits across workers and peers (issue 10, part 4): with RATE_LIMIT_STORAGE_URL=redis://
every worker counts against the same budget; without TRUSTED_PROXIES a client cannot buy new
budgets by writing X-Forwarded-For; a storage that is down lets requests through (the limiter
must never be what stops ingestion).

The Redis tests run a redis-server of their own on a free port (skipped when the binary is not
installed: `apt-get install redis-server`)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import httpx
import pytest

from support import Server, connect, drop_schema, free_port, new_schema_name

LIMIT = 5


@pytest.fixture(scope="module")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def _server(db_url, prefix: str, **env) -> Server:
    return Server(db_url, new_schema_name(prefix), workers=env.pop("workers", 1),
                  env={"RATE_LIMIT_INGEST": f"{LIMIT}/hour", **env})


def _burst(srv: Server, page: str, n: int, headers=None) -> list[int]:
    # A new connection per request: the kernel hands each to whichever worker accepts first.
    return [httpx.post(srv.url + "/api/events/", json={"page": page}, headers=headers).status_code
            for _ in range(n)]


def _stored(db_url, srv: Server, page: str) -> int:
    with connect(db_url, srv.env["DB_SCHEMA"]) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE page = %s", (page,)).fetchone()[0]


def test_redis_storage_is_one_budget_for_every_worker(db_url, redis_url):
    srv = _server(db_url, "ratelimit_redis", workers=2, RATE_LIMIT_STORAGE_URL=redis_url).start()
    try:
        page = f"/shared-{uuid.uuid4().hex[:8]}"
        codes = _burst(srv, page, 4 * LIMIT)
        assert codes.count(201) == LIMIT and codes.count(429) == 3 * LIMIT, codes
        assert _stored(db_url, srv, page) == LIMIT
    finally:
        srv.stop()
        drop_schema(db_url, srv.env["DB_SCHEMA"])


def test_storage_down_lets_requests_through(db_url):
    closed = free_port()  # nothing listens there
    srv = _server(db_url, "ratelimit_down", RATE_LIMIT_STORAGE_URL=f"redis://127.0.0.1:{closed}/0").start()
    try:
        page = f"/down-{uuid.uuid4().hex[:8]}"
        assert _burst(srv, page, LIMIT + 2) == [201] * (LIMIT + 2)
        assert "rate limit storage failed" in srv.log()
    finally:
        srv.stop()
        drop_schema(db_url, srv.env["DB_SCHEMA"])


@pytest.mark.parametrize("fast", ["true", "false"])
def test_x_forwarded_for_from_an_untrusted_peer_buys_no_budget(db_url, fast):
    srv = _server(db_url, "ratelimit_spoof", FAST_PATHS=fast).start()  # TRUSTED_PROXIES unset
    try:
        page = f"/spoof-{uuid.uuid4().hex[:8]}"
        codes = [httpx.post(srv.url + "/api/events/", json={"page": page},
                            headers={"X-Forwarded-For": f"198.51.100.{i}",
                                     "Forwarded": f"for=203.0.113.{i}"}).status_code
                 for i in range(LIMIT + 3)]
        assert codes == [201] * LIMIT + [429] * 3, codes
        assert _stored(db_url, srv, page) == LIMIT
    finally:
        srv.stop()
        drop_schema(db_url, srv.env["DB_SCHEMA"])
