"""`python -m analytics import` (issue 12, part 3), run as a real process against real TimescaleDB.

Events posted to a real server are dumped in our export format (NDJSON, CSV, gzip) and
imported into fresh schemas: every column of every row comes back, and the rollups the import
rebuilds equal the ones ingestion built. Then: an Umami website_event export is mapped as
documented, a re-run stores nothing, a kill -9 mid-file followed by a resume ends exactly as one
clean run (rows, rollups, counts, rejects file), bad rows land in the rejects file without
stopping anything, and live ingestion goes on during an import with rollups exact afterwards.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

import stats_reference as ref
from support import ROOT, SRC, Server, connect, drop_schema, new_schema_name

UTC = timezone.utc
YEAR = datetime.now(UTC).year - 1
SPAN = (datetime(YEAR, 5, 1, tzinfo=UTC), datetime(YEAR, 6, 10, tzinfo=UTC))
EXPORT_FIELDS = ("id", "time", "page", "ip_address", "user_agent", "referrer", "session_id", "duration",
                 "description", "os", "browser", "device", "is_bot",
                 "name", "props", "hostname", "utm_source", "utm_medium", "utm_campaign", "country")


# -- helpers -----------------------------------------------------------------------------------

def run_import(db_url: str, schema: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analytics", "import", *map(str, args)], cwd=ROOT,
                          env=_env(db_url, schema), capture_output=True, text=True, timeout=timeout)


def _env(db_url: str, schema: str) -> dict:
    return {**os.environ, "DATABASE_URL": db_url, "DB_SCHEMA": schema, "PYTHONPATH": str(SRC),
            "LOG_LEVEL": "WARNING"}


def events_rows(conn) -> list[str]:
    """Every stored event, every column but visitor_id, as text, in a stable order. (visitor_id
    is a pseudonym of the day an event arrived live, made from an address that is not stored:
    no file carries it, and imported events have none.)"""
    return [r[0] for r in conn.execute("SELECT (to_jsonb(e) - 'visitor_id')::text FROM events e ORDER BY id, time")]


def rollup_snapshot(conn) -> dict[str, list]:
    """Every rollup table and the session state (as tests/test_stats_rollups.py compares them)."""
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'rollup\\_%%\\_%%' "
        "AND tablename <> 'rollup_meta' ORDER BY 1")]
    out = {}
    for t in tables:
        if "_vis_" in t or t.startswith("rollup_visit_"):
            continue  # visitors and visits: live ingestion only (see events_rows)
        where = "WHERE n <> 0" if "_ses_" in t else ""  # moved first-seen transitions leave zero rows
        out[t] = [r[0] for r in conn.execute(f'SELECT r::text FROM "{t}" r {where} ORDER BY 1')]
    out["rollup_sessions"] = sorted(
        (sid, sorted(entries)) for sid, entries in conn.execute("SELECT session_id, entries FROM rollup_sessions"))
    return out


def full_rebuild(db_url: str, schema: str) -> None:
    run = subprocess.run([sys.executable, "-m", "analytics", "rollups", "rebuild"], cwd=ROOT,
                         env=_env(db_url, schema), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def _z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dump_rows(conn) -> list[dict]:
    """The rows as our export writes them (the fields GET /api/events/{id}/ answers)."""
    cur = conn.execute(f"SELECT {', '.join(EXPORT_FIELDS)} FROM events ORDER BY time, id")
    return [{**dict(zip(EXPORT_FIELDS, r)), "id": str(r[0]), "time": _z(r[1])} for r in cur]


def write_ndjson(path: Path, rows: list[dict], extra_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    for at, text in sorted((extra_lines or {}).items()):
        lines.insert(at, text)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_FIELDS)
    for r in rows:
        v = [r.get(f) for f in EXPORT_FIELDS]  # rows made without issue 11's columns leave them empty
        w.writerow(["" if x is None else str(x).lower() if isinstance(x, bool)
                    else json.dumps(x) if isinstance(x, dict) else x for x in v])
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def summary(proc: subprocess.CompletedProcess) -> str:
    """The import's final line for the file, without this run's timings."""
    line = [x for x in proc.stderr.splitlines() if " rows: " in x][-1]
    return line.split("; this run")[0].split(" (see ")[0]


@pytest.fixture(scope="module")
def source(db_url, tmp_path_factory):
    """Events posted to a real server (real user-agent classification, real ingest rollups),
    dumped in our export format. The schema then serves the live-ingestion test."""
    schema = new_schema_name("imp_src")
    srv = Server(db_url, schema, env={"MAX_EVENT_AGE_DAYS": "800"}).start()
    made: list[str] = [schema]
    try:
        events = ref.make_events(random.Random(12), [SPAN], 3000, sessions=300, fields=True)
        for i, e in enumerate(events[:300]):  # the columns make_events leaves at their defaults
            e.update(description=f"d{i} ,\"quoted\"\nnewline", ip_address=f"203.0.113.{i % 250}")
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            ref.post_batches(client, events, size=500)
        conn = connect(db_url, schema)
        d = tmp_path_factory.mktemp("import")
        yield {"schema": schema, "server": srv, "conn": conn, "dir": d, "made": made,
               "rows": dump_rows(conn), "events": events_rows(conn), "rollups": rollup_snapshot(conn)}
        conn.close()
    finally:
        srv.stop()
        for s in made:
            drop_schema(db_url, s)


def fresh_schema(source) -> str:
    s = new_schema_name("imp")
    source["made"].append(s)
    return s


# -- our own format ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["events.ndjson", "events.csv.gz"])
def test_round_trip_of_our_export(db_url, source, name):
    """NDJSON, and CSV compressed with gzip: every column of every row comes back as stored,
    and the rollups rebuilt for the imported days equal those ingestion built row by row."""
    rows = source["rows"]
    assert len(rows) == 3000 and any(r["description"] for r in rows) and any(r["session_id"] is None for r in rows)
    path = source["dir"] / name
    (write_csv if ".csv" in name else write_ndjson)(path, rows)
    schema = fresh_schema(source)
    proc = run_import(db_url, schema, path)
    assert proc.returncode == 0, proc.stderr
    fmt = "csv gzip" if name.endswith(".csv.gz") else "ndjson"
    assert f"{fmt}, 3,000 rows: 3,000 stored, 0 duplicates, 0 rejected" in summary(proc)
    assert not path.with_name(path.name + ".rejects.csv").exists()
    with connect(db_url, schema) as conn:
        assert events_rows(conn) == source["events"]
        assert rollup_snapshot(conn) == source["rollups"]


def test_rerun_stores_nothing_new(db_url, source):
    """The same file again is recognised as done; read again (--restart) or as another format
    of the same rows, every row is a duplicate on (id, time) and nothing changes."""
    path = write_ndjson(source["dir"] / "again.ndjson", source["rows"])
    schema = fresh_schema(source)
    assert run_import(db_url, schema, path).returncode == 0
    with connect(db_url, schema) as conn:
        rows, rollups = events_rows(conn), rollup_snapshot(conn)
        again = run_import(db_url, schema, path)
        assert again.returncode == 0 and "already imported (3,000 rows: 3,000 stored" in again.stderr
        restarted = run_import(db_url, schema, path, "--restart")
        assert restarted.returncode == 0, restarted.stderr
        assert "3,000 rows: 0 stored, 3,000 duplicates, 0 rejected" in summary(restarted)
        as_csv = run_import(db_url, schema, write_csv(source["dir"] / "again.csv", source["rows"]))
        assert "3,000 rows: 0 stored, 3,000 duplicates, 0 rejected" in summary(as_csv)
        assert "rollups rebuilt" not in restarted.stderr + as_csv.stderr  # no new rows, no rebuild
        assert events_rows(conn) == rows and rollup_snapshot(conn) == rollups


BAD_LINES = {
    # position in the file (0-based line index) -> the line
    5: "this is not json",
    9: "[1, 2, 3]",
    14: json.dumps({"id": "not-a-uuid", "time": "2024-01-01T00:00:00Z", "page": "/"}),
    20: json.dumps({"id": str(uuid.uuid4()), "page": "/no-time"}),
    27: json.dumps({"id": str(uuid.uuid4()), "time": "2999-01-01T00:00:00Z", "page": "/future"}),
    33: json.dumps({"id": str(uuid.uuid4()), "time": "2024-01-01T00:00:00Z", "page": "/x" * 2000}),
    41: json.dumps({"id": str(uuid.uuid4()), "time": "2024-01-01T00:00:00Z", "page": "/os",
                    "os": "BeOS", "browser": "Firefox", "device": "desktop", "is_bot": False}),
    50: json.dumps({"id": str(uuid.uuid4()), "time": "2024-01-01T00:00:00Z", "page": "/nul\u0000"}),
    64: json.dumps({"id": str(uuid.uuid4()), "time": "2024-13-01T00:00:00Z", "page": "/month13"}),
    77: "",  # a blank line is skipped, not a reject
    90: json.dumps({"id": str(uuid.uuid4()), "time": "2024-01-01T00:00:00Z", "page": "/d", "duration": -4}),
}
EXPECTED_REJECTS = [
    ("6", "row", "not valid JSON"), ("10", "row", "not a JSON object"), ("15", "id", "UUID"),
    ("21", "time", "required"), ("28", "time", "must not be in the future"),
    ("34", "page", "at most 2048"), ("42", "os", "must be one of"), ("51", "page", "NUL"),
    ("65", "time", "ISO 8601"), ("91", "duration", "greater than or equal to 0"),
]


def _rejects(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_latin1_environment_still_imports_any_text(db_url, source):
    """PGCLIENTENCODING=LATIN1 (or a role's default) changes nothing: the importer speaks UTF-8."""
    page = "/页面/ü/🙂"
    rows = [{**r, "page": page} for r in source["rows"][:20]]
    path = write_ndjson(source["dir"] / "latin1.ndjson", rows)
    schema = fresh_schema(source)
    proc = subprocess.run([sys.executable, "-m", "analytics", "import", str(path)], cwd=ROOT, timeout=300,
                          env={**_env(db_url, schema), "PGCLIENTENCODING": "LATIN1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "20 rows: 20 stored, 0 duplicates, 0 rejected" in summary(proc)
    with connect(db_url, schema) as conn:
        assert conn.execute("SELECT array_agg(DISTINCT page) FROM events").fetchone()[0] == [page]


def test_bad_rows_go_to_the_rejects_file(db_url, source):
    path = write_ndjson(source["dir"] / "bad.ndjson", source["rows"][:200], BAD_LINES)
    schema = fresh_schema(source)
    proc = run_import(db_url, schema, path, "--chunk-rows", "7")
    assert proc.returncode == 0, proc.stderr
    assert "210 rows: 200 stored, 0 duplicates, 10 rejected" in summary(proc)
    got = _rejects(path.with_name("bad.ndjson.rejects.csv"))
    assert got[0] == ["line", "field", "reason"]
    assert [(line, field) for line, field, _ in got[1:]] == [(a, b) for a, b, _ in EXPECTED_REJECTS]
    for (_, _, reason), (_, _, part) in zip(got[1:], EXPECTED_REJECTS):
        assert part in reason, (reason, part)
    with connect(db_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (200,)


# -- Umami ---------------------------------------------------------------------------------------

UMAMI_HEADER = ("website_id,session_id,visit_id,event_id,hostname,browser,os,device,screen,language,country,"
                "region,city,url_path,url_query,utm_source,utm_medium,utm_campaign,utm_content,utm_term,"
                "referrer_path,referrer_query,referrer_domain,page_title,gclid,fbclid,msclkid,ttclid,"
                "li_fat_id,twclid,event_type,event_name,tag,distinct_id,created_at,job_id")
W = "3b1a2e5c-7d4f-4a8e-9c61-0f2d8b7a5e13"
S1, S2 = "c0b1f1a2-5e6d-5b7c-8d9e-0a1b2c3d4e5f", "d1c2e3f4-6a7b-5c8d-9e0f-1a2b3c4d5e6f"
V1, V2 = "e2d3f4a5-7b8c-4d9e-8f01-2b3c4d5e6f70", "f3e4a5b6-8c9d-4e0f-9a12-3c4d5e6f7081"
UMAMI_ROWS = [
    # a page view from a search engine, Chrome on Windows
    f"{W},{S1},{V1},0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c60,example.com,chrome,Windows 10,desktop,1920x1080,"
    f"en-US,DE,DE-BE,Berlin,/pricing,?plan=pro,google,cpc,spring,,,/search,q=analytics,www.google.com,"
    f"Pricing - Example,,,,,,,1,,,,{YEAR}-05-03 10:15:42.123,",
    # the same visitor's custom event (event_type 2, a name)
    f"{W},{S1},{V1},1b0c9d8e-7f6a-4b5c-9d3e-2f1a0b9c8d71,example.com,chrome,Windows 10,desktop,1920x1080,"
    f"en-US,DE,DE-BE,Berlin,/pricing,,,,,,,,,,Pricing - Example,,,,,,,2,signup-click,,,{YEAR}-05-03 10:16:05,",
    # Safari on an iPhone, no referrer, a page title with a comma, quotes and a line break
    f"{W},{S2},{V2},2c1d0e9f-8a7b-4c6d-8e4f-3a2b1c0d9e82,example.com,ios,iOS,mobile,390x844,fr-FR,FR,,Paris,"
    f"/blog/post-1,,,,,,,,,,\"Post 1, \"\"the\"\"\nlong one\",,,,,,,1,,,,{YEAR}-05-04T08:00:00Z,",
    # an Umami browser id we have no name for is kept as given; Chrome OS laptop -> desktop
    f"{W},{S2},{V2},3d2e1f0a-9b8c-4d7e-9f5a-4b3c2d1e0f93,example.com,beaker,Chrome OS,laptop,1366x768,ko,"
    f"KR,,,/,,,,,,,/path,,news.ycombinator.com,Home,,,,,,,1,,,,{YEAR}-05-04 09:30:00,",
    # bad rows: no event id, an impossible date, no url_path
    f"{W},{S2},{V2},,example.com,chrome,Linux,desktop,,,,,,/x,,,,,,,,,,,,,,,,,1,,,,{YEAR}-05-04 09:31:00,",
    f"{W},{S2},{V2},4e3f2a1b-0c9d-4e8f-8a6b-5c4d3e2f1a04,example.com,chrome,Linux,desktop,,,,,,/y,,,,,,,,,,,,,,,,,"
    f"1,,,,{YEAR}-02-30 09:31:00,",
    f"{W},{S2},{V2},5f4a3b2c-1d0e-4f9a-9b7c-6d5e4f3a2b15,example.com,chrome,Linux,desktop,,,,,,,,,,,,,,,,,,,,,,,"
    f"1,,,,{YEAR}-05-04 09:32:00,",
    # an Android tablet with Samsung's browser
    f"{W},{S2},{V2},6a5b4c3d-2e1f-4a0b-8c8d-7e6f5a4b3c26,example.com,samsung,Android OS,tablet,800x1280,de,AT,,,"
    f"/docs/start,,,,,,,,,,Docs,,,,,,,1,,,,{YEAR}-05-05 12:00:00,",
]


def test_umami_export_is_mapped(db_url, source):
    path = source["dir"] / "website_event.csv"
    path.write_text(UMAMI_HEADER + "\n" + "\n".join(UMAMI_ROWS) + "\n")
    schema = fresh_schema(source)
    proc = run_import(db_url, schema, path)
    assert proc.returncode == 0, proc.stderr
    assert "umami, 8 rows: 5 stored, 0 duplicates, 3 rejected" in summary(proc)
    # line numbers count physical lines: the title with a line break takes lines 4 and 5
    rejects = _rejects(path.with_name("website_event.csv.rejects.csv"))
    assert [r[:2] for r in rejects] == [["line", "field"], ["7", "event_id"], ["8", "created_at"], ["9", "url_path"]]
    assert "real date" in rejects[2][2] and rejects[3][2] == "required"
    with connect(db_url, schema) as conn:
        got = conn.execute("""SELECT id::text, time, page, ip_address, user_agent, referrer, referrer_host,
            session_id, duration, description, os, browser, device, is_bot, name FROM events ORDER BY time""").fetchall()
        where = conn.execute("SELECT hostname, country, utm_source FROM events ORDER BY time").fetchall()
    # hostname, country and UTM as Umami recorded them
    assert where[0] == ("example.com", "DE", "google") and where[2] == ("example.com", "FR", ""), where
    t = lambda *a: datetime(YEAR, *a, tzinfo=UTC)  # noqa: E731
    assert got == [
        ("0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c60", t(5, 3, 10, 15, 42, 123000), "/pricing", None, "",
         "https://www.google.com/search", "google.com", S1, None, "", "Windows", "Chrome", "desktop", False, "pageview"),
        ("1b0c9d8e-7f6a-4b5c-9d3e-2f1a0b9c8d71", t(5, 3, 10, 16, 5), "/pricing", None, "", "", "", S1, None,
         "", "Windows", "Chrome", "desktop", False, "signup-click"),  # a custom event: its name
        ("2c1d0e9f-8a7b-4c6d-8e4f-3a2b1c0d9e82", t(5, 4, 8, 0, 0), "/blog/post-1", None, "", "", "", S2, None, "",
         "iOS", "Mobile Safari", "mobile", False, "pageview"),
        ("3d2e1f0a-9b8c-4d7e-9f5a-4b3c2d1e0f93", t(5, 4, 9, 30, 0), "/", None, "", "https://news.ycombinator.com/path",
         "news.ycombinator.com", S2, None, "", "ChromeOS", "beaker", "desktop", False, "pageview"),
        ("6a5b4c3d-2e1f-4a0b-8c8d-7e6f5a4b3c26", t(5, 5, 12, 0, 0), "/docs/start", None, "", "", "", S2, None, "",
         "Android", "Samsung Internet", "tablet", False, "pageview"),
    ]
    # --umami-sessions visit: Umami's visits become the sessions
    visits = fresh_schema(source)
    proc = run_import(db_url, visits, path, "--umami-sessions", "visit", "--rejects", source["dir"] / "v.csv")
    assert proc.returncode == 0, proc.stderr
    with connect(db_url, visits) as conn:
        assert conn.execute("SELECT session_id FROM events ORDER BY time").fetchall() == [(V1,), (V1,), (V2,), (V2,), (V2,)]


# -- resume --------------------------------------------------------------------------------------

def big_rows(n: int) -> list[dict]:
    """Rows in our export format without a server: classified columns included."""
    rng = random.Random(99)
    events = ref.make_events(rng, [SPAN], n, sessions=2000)
    oses = ["Windows", "MacOS", "iOS", "Android", "Linux"]
    return [{**e, "ip_address": "", "description": "", "os": rng.choice(oses), "browser": rng.choice(["Chrome", "Firefox"]),
             "device": rng.choice(["desktop", "mobile"]), "is_bot": False} for e in events]


@pytest.fixture(scope="module")
def big_file(source) -> Path:
    bad = {i * 997: json.dumps({"id": "nope", "time": "2024-01-01T00:00:00Z", "page": "/"}) for i in range(1, 40)}
    return write_ndjson(source["dir"] / "big.ndjson.gz", big_rows(60_000), bad)


@pytest.fixture(scope="module")
def big_csv(source) -> Path:
    """The same rows as CSV, some over two lines (a quoted line break), some refused."""
    rows = big_rows(60_000)
    for i in range(0, len(rows), 101):
        rows[i]["description"] = f"two\nlines {i}"
    for i in range(1, 40):
        rows[i * 997]["id"] = "nope"
    return write_csv(source["dir"] / "big.csv", rows)


@pytest.mark.parametrize("which", ["ndjson.gz", "csv"])
def test_kill_9_then_resume_equals_one_clean_run(db_url, source, big_file, big_csv, tmp_path, which):
    big_file = big_file if which == "ndjson.gz" else big_csv
    clean_schema, killed_schema = fresh_schema(source), fresh_schema(source)
    clean = run_import(db_url, clean_schema, big_file, "--chunk-rows", "500", "--rejects", tmp_path / "clean.csv")
    assert clean.returncode == 0, clean.stderr
    expected = "60,039 rows: 60,000 stored" if which == "ndjson.gz" else "60,000 rows: 59,961 stored"
    assert f"{expected}, 0 duplicates, 39 rejected" in summary(clean)

    # The checkpoint table exists once the import has migrated the schema: wait for the first
    # committed chunks, then kill -9 mid-file.
    cmd = [sys.executable, "-m", "analytics", "import", str(big_file), "--chunk-rows", "500",
           "--rejects", str(tmp_path / "killed.csv")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(db_url, killed_schema), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    done_at_kill = 0
    with connect(db_url, killed_schema) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                row = conn.execute("SELECT rows_read FROM import_checkpoints").fetchone()
            except Exception:  # noqa: BLE001 - not migrated yet
                row = None
            if row and row[0] >= 8000:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        proc.stderr.close()
        (done_at_kill, stored) = conn.execute("SELECT rows_read, stored FROM import_checkpoints").fetchone()
        assert 8000 <= done_at_kill < 60_000
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (stored,)  # the checkpoint agrees

    resumed = run_import(db_url, killed_schema, big_file, "--chunk-rows", "500", "--rejects", tmp_path / "killed.csv")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at line" in resumed.stderr and f"({done_at_kill:,} rows done)" in resumed.stderr
    assert summary(resumed).replace(killed_schema, "") == summary(clean).replace(clean_schema, "")
    assert (tmp_path / "killed.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert len(_rejects(tmp_path / "clean.csv")) == 40
    with connect(db_url, clean_schema) as a, connect(db_url, killed_schema) as b:
        assert events_rows(a) == events_rows(b)
        assert rollup_snapshot(a) == rollup_snapshot(b)
        cols = "rows_read, stored, duplicates, rejected, rejects_bytes, days, phase, position, line"
        assert (a.execute(f"SELECT {cols} FROM import_checkpoints").fetchall()
                == b.execute(f"SELECT {cols} FROM import_checkpoints").fetchall())


# -- rollups and live traffic --------------------------------------------------------------------

def test_live_ingestion_during_import_and_rollups_exact_after(db_url, source, big_file, tmp_path):
    """Import into the schema a live server writes to, while clients post events into the same
    days: every post succeeds, and afterwards the rollups equal a full rebuild from raw."""
    schema, srv, conn = source["schema"], source["server"], source["conn"]
    (before,) = conn.execute("SELECT count(*) FROM events").fetchone()
    live = ref.make_events(random.Random(5), [SPAN], 40_000, sessions=2500)  # session ids shared with the file
    statuses: list[int] = []
    stop = threading.Event()

    def post() -> None:  # until the import is over
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            for i in range(0, len(live), 50):
                statuses.append(client.post("/api/events/batch", json=live[i:i + 50]).status_code)
                if stop.is_set():
                    break

    t = threading.Thread(target=post)
    t.start()
    proc = run_import(db_url, schema, big_file, "--chunk-rows", "2000", "--rebuild-events", "15000",
                      "--rejects", tmp_path / "r.csv")
    stop.set()
    t.join(120)
    assert proc.returncode == 0, proc.stderr
    assert "60,000 stored" in summary(proc) and "rollups rebuilt" in proc.stderr
    assert len(statuses) >= 10 and set(statuses) <= {200, 201}, statuses
    (after,) = conn.execute("SELECT count(*) FROM events").fetchone()
    assert after == before + 60_000 + 50 * len(statuses)
    imported = rollup_snapshot(conn)
    full_rebuild(db_url, schema)
    assert rollup_snapshot(conn) == imported
