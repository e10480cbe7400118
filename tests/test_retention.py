"""Retention keeps answers consistent (issue 12, part 1).

Events over 50 days, a set of random questions answered before retention; then retention
drops raw events older than RETENTION_DAYS (raw horizon H) and rollups older than
ROLLUP_RETENTION_DAYS (rollup horizon R < H), and the same questions are asked again:
- starting at or after H: the same answer (and the rollups still agree with raw events);
- starting in [R, H): the same answer when the rollups answered it before (the planner never
  falls back to the raw events that are gone), else a 422 `retention_horizon` naming `start`
  (or `compare` for the previous period), and only when the answer before did read raw events;
- starting before R: a 422 naming `start`.
Also: the seed endpoint, the horizons in `meta`, session state trimmed, a second run and a
ranged rebuild change nothing, a full rebuild is refused, bad settings refuse to start, and the
background job of a 2-worker server runs once.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

import stats_reference as ref
from analytics import migrations
from analytics.aggregation.planner import BeyondHorizon, ReadyTables, plan
from analytics.aggregation.query import build_query
from analytics.config import Secret, Settings
from analytics.retention.state import Horizons
from support import ROOT, SRC, Server, connect, drop_schema, new_schema_name

UTC = timezone.utc
DAY = timedelta(days=1)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
SPAN = (TODAY - 60 * DAY, TODAY - 10 * DAY)
RAW_DAYS, ROLLUP_DAYS = 35, 50           # H ~ today - 35 days, R = today - 50 days (UTC midnights)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
INTERVALS = ["1 minute", "15 minutes", "1 hour", "3 hours", "1 day", "1 week"]
METRICS = ["events", "unique_sessions", "avg_duration", "median_duration", "p95_duration"]
DIMS = ["page", "os", "browser", "device", "referrer"]
PAGES = sorted(set(ref.PAGES))
RETENTION_ENV = {"RETENTION_DAYS": str(RAW_DAYS), "ROLLUP_RETENTION_DAYS": str(ROLLUP_DAYS),
                 # a short publish wait: 5 s (the readiness TTL) + these + 1 s
                 "DB_TIMEOUT": "1", "READ_RAW_WAIT_SECONDS": "0"}


def _z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _cli(schema: str, db_url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analytics", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": db_url, "DB_SCHEMA": schema,
                               "PYTHONPATH": str(SRC), **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def env(db_url):
    schema = new_schema_name("retention")
    srv = Server(db_url, schema, env={"MAX_EVENT_AGE_DAYS": "800", "STATS_CACHE_TTL_SECONDS": "0",
                                      "STATS_ALLOW_RAW_SOURCE": "true", "EVENTS_CHUNK_INTERVAL": "1 day"}).start()
    try:
        rng = random.Random(12)
        events = ref.make_events(rng, [SPAN], 6000, sessions=300)  # sessions span the whole range
        rng.shuffle(events)
        with httpx.Client(base_url=srv.url, timeout=120, headers=srv.headers) as client:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: ref.post_batches(client, events[i:i + 200]), range(0, len(events), 200)))
            conn = connect(db_url, schema)
            yield {"client": client, "conn": conn, "schema": schema, "db_url": db_url,
                   "events": ref.stored_events(conn), "server": srv}
            conn.close()
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def random_question(rng: random.Random, events) -> tuple[str, dict]:
    kind = rng.choice(["timeseries", "timeseries", "breakdown", "totals"])
    unit = rng.choice([timedelta(minutes=1), timedelta(minutes=15), timedelta(hours=1), DAY, DAY])
    start = SPAN[0] + unit * rng.randrange(int((SPAN[1] - SPAN[0]) / unit))
    if rng.random() < 0.2:
        start += timedelta(seconds=rng.randrange(3600))  # unaligned: raw slivers at the edges
    end = min(SPAN[1] + 2 * DAY, start + unit * rng.randint(1, 40 if unit < DAY else 20))
    params: dict = {"start": _z(start), "end": _z(end), "timezone": rng.choice(ZONES),
                    "metrics": rng.sample(METRICS, rng.randint(1, 2))}
    if kind == "timeseries":
        params["interval"] = rng.choice(INTERVALS)
    if kind != "totals" or rng.random() < 0.3:
        params["group_by"] = rng.sample(DIMS, max(kind == "breakdown", rng.choice([0, 1, 1, 2])))
    sample = rng.choice(events)
    for _ in range(rng.choice([0, 0, 1, 2])):
        name = rng.choice(["page", "page_prefix", "os", "device", "referrer"])
        if name == "page_prefix":
            params[name] = [rng.choice(["/blog", "/docs/", "/"])]
        else:
            pool = sorted({getattr(e, ref.DIM_COLUMN[name]) for e in events})
            params[name] = [getattr(sample, ref.DIM_COLUMN[name])] + rng.sample(pool, rng.choice([0, 0, 1]))
    if rng.random() < 0.15:
        params["include_bots"] = "true"
    if params.get("group_by") and kind != "totals":
        params["limit"] = rng.choice([3, 1000])
    if kind == "totals" and rng.random() < 0.3:
        params["compare"] = "previous"
    return kind, params


def _read_raw(meta: dict) -> bool:
    """Whether an answer read raw events (its own range or its previous period)."""
    sources = list(meta["sources"].values()) + list(meta.get("previous", {}).get("sources", {}).values())
    return any("raw" in s.split("+") for s in sources)


def _retention(env, *args: str) -> subprocess.CompletedProcess:
    run = _cli(env["schema"], env["db_url"], "retention", *args, env=RETENTION_ENV)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_answers_stay_consistent_after_retention(env):
    client, conn, events = env["client"], env["conn"], env["events"]
    rng = random.Random(99)
    questions = []
    for _ in range(360):
        kind, params = random_question(rng, events)
        r = client.get(f"/api/v1/stats/{kind}", params=params)
        if r.status_code == 422:  # e.g. more buckets than allowed; not about retention
            continue
        assert r.status_code == 200, r.text
        assert r.json()["meta"]["raw_horizon"] is None and r.json()["meta"]["rollup_horizon"] is None
        questions.append((kind, params, r.json()))
    seed_params = {"pages": PAGES}
    seed_before = {d: client.get("/api/events/", params={**seed_params, "duration": d}).json()
                   for d in ("1 day", "1 week", "1 hour")}

    # While the run publishes, waits and drops, questions that read raw events before the
    # horizon are asked over and over: each answer is the one from before, or the 422; never one
    # counted over raw events of which a part is already gone.
    watched = [(k, p, b) for k, p, b in questions if _read_raw(b["meta"])
               and TODAY - ROLLUP_DAYS * DAY <= datetime.fromisoformat(p["start"].replace("Z", "+00:00"))
               < TODAY - (RAW_DAYS + 1) * DAY]
    assert len(watched) >= 5
    done, during = threading.Event(), {"same": 0, "refused": 0}

    def watch() -> None:
        with httpx.Client(base_url=env["server"].url, timeout=60, headers=env["server"].headers) as c:
            while not done.is_set():
                for kind, params, before in watched:
                    r = c.get(f"/api/v1/stats/{kind}", params=params)
                    if r.status_code == 422:
                        assert r.json()["detail"][0]["type"] == "retention_horizon", r.text
                        during["refused"] += 1
                    else:
                        assert r.status_code == 200 and r.json()["results"] == before["results"], (params, r.text)
                        during["same"] += 1

    with ThreadPoolExecutor(1) as pool:
        watcher = pool.submit(watch)
        try:
            out = _retention(env).stdout
        finally:
            done.set()
        watcher.result()
    assert during["same"] > 0 and during["refused"] > 0, during
    (raw_h, rollup_h) = conn.execute("SELECT raw_horizon, rollup_horizon FROM retention_state").fetchone()
    assert rollup_h == TODAY - ROLLUP_DAYS * DAY, out
    # 1-day chunks: the end of the newest chunk entirely older than now - RETENTION_DAYS
    assert TODAY - (RAW_DAYS + 1) * DAY <= raw_h <= TODAY - RAW_DAYS * DAY, out
    assert f"raw horizon {raw_h.isoformat()}" in out and "raw chunk(s)" in out
    assert conn.execute("SELECT count(*) FROM events WHERE time < %s", (raw_h,)).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM events WHERE time >= %s", (raw_h,)).fetchone()[0] > 2000
    for (table,) in conn.execute("SELECT name FROM rollup_meta").fetchall():
        assert conn.execute(f'SELECT count(*) FROM "{table}" WHERE bucket < %s', (rollup_h,)).fetchone() == (0,)
    assert conn.execute("""SELECT count(*) FROM rollup_sessions, unnest(entries) e
        WHERE split_part(e, '|', 1)::bigint < %s""", (int(rollup_h.timestamp()) // 900,)).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM rollup_sessions").fetchone()[0] > 100

    def ask_again() -> dict:
        seen = {"after": 0, "between_same": 0, "between_422": 0, "before_422": 0, "compare_422": 0}
        for kind, params, before in questions:
            start = datetime.fromisoformat(params["start"].replace("Z", "+00:00"))
            prev_start = start - (datetime.fromisoformat(params["end"].replace("Z", "+00:00")) - start)
            r = client.get(f"/api/v1/stats/{kind}", params=params)
            if start < rollup_h:
                assert r.status_code == 422, (params, r.text)
                (err,) = r.json()["detail"]
                assert err["loc"] == ["query", "start"] and err["type"] == "retention_horizon", r.text
                assert "ROLLUP_RETENTION_DAYS" in err["msg"]
                seen["before_422"] += 1
                continue
            if r.status_code == 422:
                (err,) = r.json()["detail"]
                assert err["type"] == "retention_horizon", r.text
                if err["loc"] == ["query", "compare"] and prev_start < rollup_h:
                    seen["compare_422"] += 1  # the previous period starts where nothing is kept
                    continue
                # only a question whose answer read raw events may need the dropped ones
                assert _read_raw(before["meta"]), (params, before["meta"], err)
                if err["loc"] == ["query", "compare"]:
                    assert prev_start < raw_h, params
                    seen["compare_422"] += 1
                else:
                    assert err["loc"] == ["query", "start"] and start < raw_h, (params, r.text)
                    seen["between_422"] += 1
                continue
            assert r.status_code == 200, (params, r.text)
            after = r.json()
            assert after["results"] == before["results"], (kind, params, before["meta"], after["meta"])
            assert datetime.fromisoformat(after["meta"]["raw_horizon"]) == raw_h
            assert datetime.fromisoformat(after["meta"]["rollup_horizon"]) == rollup_h
            seen["after" if start >= raw_h else "between_same"] += 1
        return seen

    seen = ask_again()
    # the comparison means something only if every case was met often enough
    assert seen["after"] >= 40 and seen["between_same"] >= 15 and seen["between_422"] >= 5 \
        and seen["before_422"] >= 40, seen

    # nothing stale: where raw events are kept, the rollups still agree with them
    checked = 0
    for kind, params, _ in questions:
        if datetime.fromisoformat(params["start"].replace("Z", "+00:00")) >= raw_h and checked < 40:
            auto = client.get(f"/api/v1/stats/{kind}", params=params)
            raw = client.get(f"/api/v1/stats/{kind}", params={**params, "source": "raw"})
            if raw.status_code == 200:
                assert auto.json()["results"] == raw.json()["results"], params
                checked += 1
    assert checked >= 20

    # seed 004's aggregate: whole days still answer (buckets that started before R left out);
    # a width only raw events answer is a 422 naming duration
    for d in ("1 day", "1 week"):
        after = client.get("/api/events/", params={**seed_params, "duration": d})
        assert after.status_code == 200, after.text
        kept = [row for row in seed_before[d] if datetime.fromisoformat(row["bucket"]) >= rollup_h]
        assert after.json() == kept and len(kept) >= 20
    hourly = client.get("/api/events/", params={**seed_params, "duration": "1 hour"})
    assert hourly.status_code == 422, hourly.text
    (err,) = hourly.json()["detail"]
    assert err["loc"] == ["query", "duration"] and err["type"] == "retention_horizon"

    # a second run drops nothing and changes nothing
    again = _retention(env).stdout
    assert "dropped 0 raw chunk(s)" in again and "rows deleted" not in again, again
    assert ask_again() == seen

    # a full rebuild would empty the rollups before H: refused; a ranged one after H keeps the
    # session entries it cannot read back (unique sessions before H unchanged)
    full = _cli(env["schema"], env["db_url"], "rollups", "rebuild")
    assert full.returncode == 2 and "retention" in full.stderr, full.stdout + full.stderr
    day = raw_h + 3 * DAY
    ranged = _cli(env["schema"], env["db_url"], "rollups", "rebuild", "--start", _z(day), "--end", _z(day + DAY))
    assert ranged.returncode == 0, ranged.stderr
    early = _cli(env["schema"], env["db_url"], "rollups", "rebuild", "--start", _z(raw_h - DAY), "--end", _z(raw_h))
    assert early.returncode == 2, early.stdout
    assert ask_again() == seen


def test_planner_never_plans_raw_reads_before_the_raw_horizon():
    """Pure planning (no database): a raw sliver before H moves the question to a family whose
    pieces cover it, or refuses it; pieces from H on may be raw."""
    h = datetime(2026, 3, 10, tzinfo=UTC)
    ready = ReadyTables([f"rollup_{k}_{n}_{g}" for k, n, g in [
        ("agg", "total", "1m"), ("agg", "total", "5m"), ("agg", "total", "15m"), ("agg", "total", "1h"),
        ("agg", "total", "1d"), ("agg", "page", "1h"), ("agg", "page", "1d"), ("ses", "total", "1h"),
        ("ses", "total", "1d"), ("ses", "total", "15m"), ("dur", "total", "1h"), ("dur", "total", "1d")]],
        Horizons(raw=h))

    def q(start, end, **kw):
        args = dict(interval=None, timezone_name="UTC", group_by=[], metrics=["events"], filters={},
                    include_bots=False, order_by=None, limit=None, offset=0, compare=None, source="auto",
                    max_buckets=10000)
        args.update(kw)
        return build_query("totals", start=start, end=end, **args)

    def raw_pieces(p):
        return [pc for s in p.sources().values() for pc in s.pieces if pc.table is None]

    # aligned to the minute before H: rollups only
    p = plan(q(h - 3 * DAY + timedelta(minutes=7), h + DAY), ready)
    assert not raw_pieces(p)
    # a second-level edge before H: only raw events could answer it
    with pytest.raises(BeyondHorizon):
        plan(q(h - DAY + timedelta(seconds=7), h + DAY), ready)
    # the same edge after H: a raw sliver there is fine
    p = plan(q(h + timedelta(seconds=7), h + DAY), ready)
    assert raw_pieces(p) and all(pc.lo >= h for pc in raw_pieces(p))
    # unique sessions with include_bots are raw-only: refused before H, answered after
    with pytest.raises(BeyondHorizon):
        plan(q(h - DAY, h + DAY, metrics=["unique_sessions"], include_bots=True), ready)
    assert plan(q(h, h + DAY, metrics=["unique_sessions"], include_bots=True), ready).ses.label == "raw"
    with pytest.raises(BeyondHorizon):
        plan(q(h - DAY, h + DAY, source="raw"), ready)
    # nothing before the rollup horizon
    with pytest.raises(BeyondHorizon):
        plan(q(h - 2 * DAY, h + DAY), ReadyTables(ready, Horizons(raw=h, rollup=h - DAY)))


def test_rollups_kept_shorter_than_raw_events_refuse_to_start(db_url):
    schema = new_schema_name("retbad")
    srv = Server(db_url, schema, env={"RETENTION_DAYS": "30", "ROLLUP_RETENTION_DAYS": "10"})
    try:
        srv.start(wait_ready=False)
        srv.proc.wait(60)
        assert srv.proc.returncode != 0
        log = srv.log()
        assert "ROLLUP_RETENTION_DAYS (10) must be >= RETENTION_DAYS (30" in log, log
    finally:
        srv.stop()
        drop_schema(db_url, schema)
    cli = _cli(schema, db_url, "retention", env={"RETENTION_DAYS": "30", "ROLLUP_RETENTION_DAYS": "10"})
    assert cli.returncode == 2 and "ROLLUP_RETENTION_DAYS" in cli.stderr and "RETENTION_DAYS (30" in cli.stderr


def test_background_job_runs_once_per_interval_across_workers(db_url, tmp_path):
    """Two workers, both polling at start: one takes the lock and drops the old chunks, the
    other finds the run done (last_run_at) and does nothing."""
    schema = new_schema_name("retjob")
    settings = Settings(database_url=Secret(db_url), db_schema=schema, events_chunk_interval="1 day")
    try:
        migrations.upgrade(settings)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'SET search_path = "{schema}", public')
            conn.execute("""INSERT INTO events (id, time, page)
                SELECT gen_random_uuid(), now() - g * interval '1 hour', '/' FROM generate_series(1, 24 * 60) g""")
        log_path = tmp_path / "server.log"
        srv = Server(db_url, schema, workers=2, log_path=log_path,
                     env={**RETENTION_ENV, "RETENTION_INTERVAL_SECONDS": "3600"}).start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and '"retention run"' not in srv.log():
                time.sleep(0.5)
            time.sleep(8)  # the other worker has polled by now (within 5 s of its start)
            runs = [json.loads(line) for line in log_path.read_text().splitlines()
                    if '"retention run"' in line]
            assert len(runs) == 1, srv.log()
            assert runs[0]["chunks_dropped"] >= 20, runs
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(f'SET search_path = "{schema}", public')
                (oldest, last_run) = conn.execute(
                    "SELECT (SELECT min(time) FROM events), last_run_at FROM retention_state").fetchone()
            assert oldest >= datetime.now(UTC) - (RAW_DAYS + 1) * DAY and last_run is not None
        finally:
            srv.stop()
    finally:
        drop_schema(db_url, schema)
