"""Every test talks to a real TimescaleDB (the local cluster `make test` starts, or the one
DATABASE_URL / POSTGRES_* names). Each run works in its own schema and drops it at the end."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from support import Server, connect, database_url, drop_schema, new_schema_name  # noqa: E402


@pytest.fixture(scope="session")
def db_url() -> str:
    return database_url()


def pytest_configure(config):
    config.addinivalue_line("markers", "both_paths: run the module's tests against a server with "
                                       "the fast paths on and one with them off (FAST_PATHS=false)")


def pytest_generate_tests(metafunc):
    # API tests run through both ways a route can be served: the fast path must behave exactly
    # as the route it is built from (web/fastpath.py).
    if "api_mode" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_paths"):
        metafunc.parametrize("api_mode", ["fast", "plain"], indirect=True, scope="session")


@pytest.fixture(scope="session")
def api_mode(request) -> str:
    """'fast' (the production setting) or 'plain' (every route through FastAPI's routing)."""
    return getattr(request, "param", "fast")


@pytest.fixture(scope="session")
def schema(db_url, api_mode):
    name = new_schema_name(f"test_{api_mode}")
    yield name
    drop_schema(db_url, name)


@pytest.fixture(scope="session")
def server(db_url, schema, api_mode):
    """One production-style server per mode for the whole run (gunicorn, one uvicorn worker).
    Its tests compare answers with raw events, so `source=raw` (an operator's knob) is on."""
    srv = Server(db_url, schema, env={"FAST_PATHS": str(api_mode == "fast").lower(),
                                      "STATS_ALLOW_RAW_SOURCE": "true"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    # Reads need a key: the client sends the server's read key, as a dashboard would, so that
    # every API test goes through the real access policy.
    with httpx.Client(base_url=server.url, timeout=30, headers=server.headers) as c:
        yield c


@pytest.fixture()
def db(db_url, schema, server):
    """A direct connection into the run's schema, for checking what was stored."""
    conn = connect(db_url, schema)
    yield conn
    conn.close()
