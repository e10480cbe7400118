"""Prometheus metrics (issue 10, part 5) on the real server with 2 gunicorn workers: the counters
of /metrics match exactly what the test sent, summed across the workers; names follow
Prometheus conventions; label values stay bounded; METRICS_PORT serves the same text without a
key; plain uvicorn (one process, no multiprocess directory) serves them too."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from support import SRC, VENV_BIN, Server, TcpProxy, connect, drop_schema, free_port, new_schema_name

WORKERS = 2
# A process of a past run that left its counter file behind: 1,000 stored events.
STALE_RUN = ("import os; from prometheus_client import Counter; "
             "Counter('analytics_events_stored', 'x', ['endpoint']).labels('single').inc(1000); print(os.getpid())")


def scrape(srv: Server) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, from a fresh connection, with the server's admin
    key where the server has one (/metrics needs `admin`)."""
    r = httpx.get(srv.url + "/metrics", timeout=10, headers=getattr(srv, "admin_headers", {}))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def parse(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def delta(after: dict, before: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def per_worker(metrics_dir: Path, name: str, **labels) -> dict[int, float]:
    """pid -> that worker's own value of a counter, read from its file alone in the
    multiprocess directory (what /metrics must add up)."""
    out = {}
    for f in metrics_dir.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        alone = Path(tempfile.mkdtemp(prefix="metrics-one-"))
        try:
            shutil.copy(f, alone / f.name)
            reg = CollectorRegistry()
            MultiProcessCollector(reg, path=str(alone))
            out[pid] = value(parse(generate_latest(reg).decode()), name, **labels)
        finally:
            shutil.rmtree(alone)
    return out


@pytest.fixture(scope="module", params=["fast", "plain"])
def metrics_server(request, db_url):
    schema = new_schema_name(f"test_metrics_{request.param}")
    port = free_port()
    # The operator's way to place the directory, so that the test can read each worker's file;
    # a stale file in it must not count (gunicorn.conf.py empties it at start).
    metrics_dir = Path(tempfile.mkdtemp(prefix="test-metrics-"))
    stale = subprocess.run([sys.executable, "-c", STALE_RUN], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                           check=True, capture_output=True, text=True)
    assert (metrics_dir / f"counter_{stale.stdout.strip()}.db").exists()
    srv = Server(db_url, schema, workers=WORKERS, env={
        "FAST_PATHS": str(request.param == "fast").lower(), "STATS_CACHE_TTL_SECONDS": "60",
        "METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    srv.metrics_port, srv.metrics_dir = port, metrics_dir
    srv.start()
    yield srv
    srv.stop()
    drop_schema(db_url, schema)
    shutil.rmtree(metrics_dir, ignore_errors=True)


def _post(url: str, path: str, **kw) -> httpx.Response:
    # A new connection per request (httpx.post opens its own client): gunicorn hands each to
    # whichever worker accepts it, so the events are spread over both.
    return httpx.post(url + path, timeout=30, **kw)


def test_counters_match_what_was_sent_summed_over_workers(metrics_server, db_url):
    url = metrics_server.url
    before = scrape(metrics_server)
    now = datetime.now(timezone.utc) - timedelta(minutes=1)

    # Single events, concurrently on fresh connections, until both workers have written some
    # (so that the scrape has two workers' files to add up).
    singles: list[dict] = []
    stored_by = "analytics_events_stored_total", {"endpoint": "single"}
    with ThreadPoolExecutor(8) as pool:
        while len(singles) < 400:
            wave = [{"id": str(uuid.uuid4()), "time": now.isoformat(), "page": f"/m/{len(singles) + i}"}
                    for i in range(8)]
            codes = list(pool.map(lambda e: _post(url, "/api/events/", json=e).status_code, wave))
            assert codes == [201] * len(wave)
            singles += wave
            seen = per_worker(metrics_server.metrics_dir, stored_by[0], **stored_by[1])
            if sum(1 for v in seen.values() if v > 0) >= WORKERS:
                break
    assert sum(1 for v in seen.values() if v > 0) >= WORKERS, seen

    dup = _post(url, "/api/events/", json=singles[0])
    assert dup.status_code == 200 and dup.json()["duplicate"] is True
    batch = [{"page": f"/b/{i}"} for i in range(4)] + [singles[1]]  # the last one is a duplicate
    r = _post(url, "/api/events/batch", json=batch)
    assert r.status_code == 201 and r.json()["stored"] == 4 and r.json()["duplicates"] == 1
    for bad in ({"page": 5}, {"page": "/x", "duration": -1}, {}):
        assert _post(url, "/api/events/", json=bad).status_code == 422
    assert _post(url, "/api/events/batch", json=[{"page": "/ok"}, {"page": None}]).status_code == 422
    assert _post(url, "/api/events/", content=b'{"page": "' + b"x" * 70_000 + b'"}',
                 headers={"content-type": "application/json"}).status_code == 413
    nopes = [f"/nope/{uuid.uuid4().hex}" for _ in range(3)]
    for path in nopes:
        assert httpx.get(url + path).status_code == 404
    # The same question twice on one keep-alive connection (one worker, one cache): a miss,
    # then a hit.
    with httpx.Client(base_url=url, timeout=30, headers=getattr(metrics_server, "headers", {})) as c:
        first = c.get("/api/v1/stats/totals", params={"metrics": "events"})
        second = c.get("/api/v1/stats/totals", params={"metrics": "events"})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    sources = {s for v in first.json()["meta"]["sources"].values() for s in v.split("+")}

    time.sleep(1.5)  # the other worker's sampled gauges are at most a second old
    after = scrape(metrics_server)
    n = len(singles)
    d = lambda name, **labels: delta(after, before, name, **labels)  # noqa: E731

    # Events: accepted = handed to the writer; stored / duplicate after COMMIT.
    assert d("analytics_events_accepted_total", endpoint="single") == n + 1
    # ... added up over the workers' own values (the stale file of a past run is gone)
    by_worker = per_worker(metrics_server.metrics_dir, stored_by[0], **stored_by[1])
    assert sum(by_worker.values()) == value(after, stored_by[0], **stored_by[1]) < 1000
    assert d("analytics_events_stored_total", endpoint="single") == n
    assert d("analytics_events_duplicate_total", endpoint="single") == 1
    assert d("analytics_events_accepted_total", endpoint="batch") == 5
    assert d("analytics_events_stored_total", endpoint="batch") == 4
    assert d("analytics_events_duplicate_total", endpoint="batch") == 1
    assert d("analytics_ingest_refused_total", endpoint="single", reason="validation") == 3
    assert d("analytics_ingest_refused_total", endpoint="batch", reason="validation") == 1
    assert d("analytics_ingest_refused_total", endpoint="single", reason="too_large") == 1
    # Every accepted event went through one COMMIT; the writer's histogram agrees.
    assert d("analytics_writer_commit_events_sum") == n + 1 + 5
    assert 1 <= d("analytics_writer_commit_events_count") <= n + 2
    with connect(db_url, metrics_server.env["DB_SCHEMA"]) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == n + 4

    # Requests, by route template and status (the fast path and FastAPI's path alike).
    req = "analytics_http_requests_total"
    assert d(req, method="POST", route="/api/events/", status=201) == n
    assert d(req, method="POST", route="/api/events/", status=200) == 1
    assert d(req, method="POST", route="/api/events/", status=422) == 3
    assert d(req, method="POST", route="/api/events/", status=413) == 1
    assert d(req, method="POST", route="/api/events/batch", status=201) == 1
    assert d(req, method="POST", route="/api/events/batch", status=422) == 1
    assert d(req, method="GET", route="/api/v1/stats/totals", status=200) == 2
    assert d(req, method="GET", route="unmatched", status=404) == 3
    assert d("analytics_http_request_duration_seconds_count", method="POST", route="/api/events/",
             status=201) == n
    assert d("analytics_http_request_duration_seconds_sum", method="POST", route="/api/events/",
             status=201) > 0

    # Stats: one miss, one hit; the miss's query read the sources its answer names.
    assert d("analytics_stats_cache_total", result="miss") == 1
    assert d("analytics_stats_cache_total", result="hit") == 1
    for s in sources:
        assert d("analytics_stats_source_total", source=s) == 1, (s, sources)

    # Gauges, summed over the live workers: idle now.
    assert value(after, "analytics_writer_queue_events") == 0
    assert value(after, "analytics_writer_circuit_open") == 0
    assert value(after, "analytics_db_pool_connections", pool="write") >= WORKERS
    assert value(after, "analytics_db_pool_connections_in_use", pool="write") >= 0

    # Unknown paths never became label values.
    assert not any("nope" in v for _, labels in after for _, v in labels)


def test_metric_names_follow_prometheus_conventions(metrics_server):
    text = httpx.get(metrics_server.url + "/metrics", timeout=10,
                     headers=getattr(metrics_server, "admin_headers", {})).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ours = {name: f for name, f in families.items() if name.startswith("analytics_")}
    assert len(ours) >= 14, sorted(ours)
    for name, f in ours.items():
        assert f.documentation, name
        if f.type == "counter":
            # the parser strips _total from a counter family's name; every sample has it
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), name
        if "duration" in name or "latency" in name:
            assert name.endswith("_seconds"), name
    assert families["analytics_http_request_duration_seconds"].type == "histogram"
    assert families["analytics_writer_commit_events"].type == "histogram"


def test_metrics_port_serves_the_same_text_without_a_key(metrics_server):
    port = metrics_server.metrics_port
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    local = parse(r.text)
    api = scrape(metrics_server)
    names = {name for name, _ in api if name.startswith("analytics_")}
    assert names and names <= {name for name, _ in local}
    # served by one worker: the other found the port taken
    assert metrics_server.log_path.read_text(errors="replace").count("metrics served on 127.0.0.1") == 1


def test_metrics_route_is_declared_behind_require_admin():
    """The keys work fills require_admin; /metrics must depend on it (and document 401/403)."""
    sys.path.insert(0, str(SRC))
    from analytics.auth.guards import require_admin
    from analytics.web.metrics import router
    (route,) = [r for r in router.routes if r.path == "/metrics"]
    assert require_admin in [d.call for d in route.dependant.dependencies]
    assert {401, 403} <= set(route.responses)


def test_plain_uvicorn_single_process(db_url):
    """Without gunicorn (no PROMETHEUS_MULTIPROC_DIR), the process's own registry is served."""
    schema = new_schema_name("test_metrics_uvicorn")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    metrics_port = free_port()  # no key needed there: the test does not depend on the keys
    env.update(DATABASE_URL=db_url, DB_SCHEMA=schema, PYTHONPATH=str(SRC), ACCESS_LOG="false",
               METRICS_PORT=str(metrics_port))
    proc = subprocess.Popen([str(VENV_BIN / "uvicorn"), "main:app", "--port", str(port)], cwd=SRC,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not get ready"
            time.sleep(0.2)
        assert httpx.post(url + "/api/events/", json={"page": "/u"}).status_code == 201
        r = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert r.status_code == 200
        m = parse(r.text)
        assert value(m, "analytics_events_stored_total", endpoint="single") == 1
        assert value(m, "analytics_http_requests_total", method="POST", route="/api/events/", status=201) == 1
    finally:
        proc.terminate()
        proc.wait(30)
        drop_schema(db_url, schema)


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _wait(pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return got


def _metrics_dirs() -> set[Path]:
    return {d for base in ("/dev/shm", tempfile.gettempdir()) for d in Path(base).glob("analytics-metrics-*")}


def test_default_directory_fresh_per_master_dead_workers_dropped_removed_at_exit(db_url):
    """Without PROMETHEUS_MULTIPROC_DIR, the master makes its own directory (the workers write
    there), a killed worker's live gauges leave it (child_exit), and it is gone after shutdown."""
    schema = new_schema_name("test_metrics_dir")
    existing = _metrics_dirs()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    srv = Server(db_url, schema, workers=WORKERS)
    srv.env = {**env, **{k: v for k, v in srv.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}}
    srv.start()
    try:
        workers = _wait(lambda: _children(srv.proc.pid) if len(_children(srv.proc.pid)) == WORKERS else None)
        # this master's directory (other servers may be starting too): where each of its
        # workers writes its gauges (livesum), sampled within a second of starting
        mdir = _wait(lambda: next((d for d in _metrics_dirs() - existing
                                   if all((d / f"gauge_livesum_{pid}.db").exists() for pid in workers)), None))
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not (mdir / f"gauge_livesum_{victim}.db").exists())
        _wait(lambda: len(_children(srv.proc.pid) - {victim}) == WORKERS)  # gunicorn replaced it
        assert scrape(srv)  # still served, from the survivors' and the new worker's files
    finally:
        srv.stop()
        drop_schema(db_url, schema)
    assert not mdir.exists()


def test_refusals_after_acceptance_and_the_breaker(db_url):
    """The writer's refusals, each counted under its reason: database_limit (a CHECK the
    validation cannot know of), overloaded (a queue of one event, full), unavailable (the
    database cut: the breaker gauge shows the open circuit, then its closing)."""
    schema = new_schema_name("test_metrics_refusals")
    proxy = TcpProxy.for_url(db_url).start()
    srv = Server(proxy.url_through(db_url), schema, env={"WRITE_QUEUE_MAX": "1", "WRITE_BATCH_WAIT_MS": "500"})
    srv.start()
    try:
        with connect(db_url, schema) as conn:  # a session may hold one entry
            conn.execute("ALTER TABLE rollup_sessions ADD CONSTRAINT test_metrics_cap CHECK (cardinality(entries) <= 1)")
        before = scrape(srv)
        assert _post(srv.url, "/api/events/", json={"page": "/one", "session_id": "capped"}).status_code == 201
        assert _post(srv.url, "/api/events/", json={"page": "/two", "session_id": "capped"}).status_code == 422

        async def two_at_once():
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                first = asyncio.create_task(c.post("/api/events/", json={"page": "/first"}))
                await asyncio.sleep(0.2)  # the first waits 500 ms in the queue for company
                second = await c.post("/api/events/", json={"page": "/second"})
                return (await first).status_code, second.status_code
        assert asyncio.run(two_at_once()) == (201, 503)

        proxy.cut()
        assert _post(srv.url, "/api/events/", json={"page": "/cut"}).status_code == 503
        _wait(lambda: value(scrape(srv), "analytics_writer_circuit_open") == 1)
        after = scrape(srv)
        proxy.restore()
        _wait(lambda: value(scrape(srv), "analytics_writer_circuit_open") == 0)
    finally:
        srv.stop()
        proxy.close()
        drop_schema(db_url, schema)
    d = lambda name, **labels: delta(after, before, name, **labels)  # noqa: E731
    refused = "analytics_ingest_refused_total"
    assert d(refused, endpoint="single", reason="database_limit") == 1
    assert d(refused, endpoint="single", reason="overloaded") == 1
    assert d(refused, endpoint="single", reason="unavailable") == 1
    assert d("analytics_events_accepted_total", endpoint="single") == 5
    assert d("analytics_events_stored_total", endpoint="single") == 2


def test_rate_limit_refusals_are_counted_and_metrics_enabled_false_records_nothing():
    """count_rate_limited is what the limiter's refusal hook calls ((policy, cost)); in this
    process (no multiprocess directory) the values are the default registry's."""
    sys.path.insert(0, str(SRC))
    from prometheus_client import REGISTRY
    from analytics.web import metrics

    def refused(kind: str) -> float:
        return REGISTRY.get_sample_value("analytics_rate_limited_total", {"kind": kind}) or 0.0

    start = refused("ingest")
    metrics.count_rate_limited("ingest", 250)  # a batch of 250 events refused: one request
    metrics.count_rate_limited("ingest")
    assert refused("ingest") == start  # tallied in the worker: written within a second
    metrics.TALLY.flush()
    assert refused("ingest") == start + 2
    try:
        metrics.configure(False)
        metrics.count_rate_limited("ingest")
        metrics.accepted("single", 1)
        metrics.TALLY.flush()
        assert refused("ingest") == start + 2
    finally:
        metrics.configure(True)


def test_tally_writes_what_direct_increments_would():
    """The hot path's tally (web/metrics.py Tally) ends in the same counter and histogram values,
    bucket by bucket, as prometheus-client's own inc/observe, and writes nothing until flushed."""
    sys.path.insert(0, str(SRC))
    from prometheus_client import Counter, Histogram

    from analytics.web.metrics import Tally

    bounds = (0.001, 0.01, 0.1, 1.0)
    values = [0.0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.99, 1.0, 1.5, 100.0]  # on and past the bounds
    texts = []
    for tallied in (False, True):
        reg = CollectorRegistry()
        c = Counter("t_events_total", "t", ["endpoint"], registry=reg).labels("single")
        h = Histogram("t_seconds", "t", ["route"], buckets=bounds, registry=reg).labels("/x")
        tally = Tally()
        for v in values:
            (tally.observe(h, v) if tallied else h.observe(v))
            (tally.inc(c, 2) if tallied else c.inc(2))
        if tallied:
            assert "t_events_total{" not in generate_latest(reg).decode().replace(
                't_events_total{endpoint="single"} 0.0', "")  # nothing written yet
            tally.flush()
            assert not tally.counts and not tally.hists
        texts.append(sorted(line for line in generate_latest(reg).decode().splitlines()
                            if not line.startswith("#") and "_created" not in line))
    assert texts[0] == texts[1]
    assert 't_seconds_bucket{le="0.001",route="/x"} 3.0' in texts[1]
