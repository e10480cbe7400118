"""Ingestion benchmark: `python -m bench ingest` (or `make bench`). About 2 minutes.

In its own schema of the real database (dropped at the end), with the service started by its
production command (gunicorn + 2 uvicorn workers, default settings, access log on) and the load
from wrk in a separate process on loopback, it prints in one run:

  (a)  the limit: rows/s of a direct COPY of the same event rows (1,000-row transactions, as
       many connections as (b) uses) into the events hypertable, with its indexes;
  (a') the limit of the service's own write path without HTTP: the same rows through
       repository.insert_events (COPY + the registered insert hooks, e.g. rollups), in-process;
  (b)  POST /api/events/batch with 1,000-event batches: events/s, b/a and b/a';
  (c)  single-event POST /api/events/ at 64 connections: req/s, p50, p99, and the acknowledged
       events (2xx, ids read from the answers) that are not in the database (must be 0);
       With (c) and the floor, who used the cores (bench/cpusplit.py): the workers, the
       database and wrk, in CPU microseconds per request, and the share of the machine that was
       idle or taken by the host (steal);
  (d)  the same single-event load against bench/seedlike.py (one INSERT + one COMMIT per
       request, seed 004's way), started with the same gunicorn command, and c/d.

wrk comes from Debian (`apt-get install -y wrk`); run as root, the bench installs it itself.
Options: --seconds N (duration of (c) and (d) per round, default 10), --rounds N (default 2;
each figure is the best of its rounds), --keep (do not drop the schema).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import psycopg  # noqa: E402

from support import Server, database_url, drop_schema, new_schema_name  # noqa: E402

from bench import cpusplit  # noqa: E402

# The event mix, shared by the Lua load scripts and the rows of (a): one source of truth.
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]
PAGES = ["/", "/about", "/pricing", "/blog/one", "/blog/two", "/contact", "/docs", "/signup"]
REFERRERS = ["https://www.google.com/search", "https://news.ycombinator.com/", "", "https://t.co/x"]


def event_body(n: int, prefix: str) -> dict:
    """Event number n of a stream; the Lua scripts build the same JSON."""
    return {"id": f"{prefix}-0000-4000-8000-{n:012x}", "page": PAGES[n % len(PAGES)],
            "user_agent": USER_AGENTS[n % len(USER_AGENTS)], "ip_address": f"10.0.{n % 200}.{n % 250}",
            "referrer": REFERRERS[n % len(REFERRERS)], "session_id": f"s{n % 5000}", "duration": n % 120}


_LUA_COMMON = r"""
local counter = 0
local prefix
local pages = {%(pages)s}
local uas = {%(uas)s}
local refs = {%(refs)s}
local acks
local function event(n)
  return string.format('{"id":"%%s-0000-4000-8000-%%012x","page":"%%s","user_agent":"%%s","ip_address":"10.0.%%d.%%d","referrer":"%%s","session_id":"s%%d","duration":%%d}',
    prefix, n, pages[n %% #pages + 1], uas[n %% #uas + 1], n %% 200, n %% 250, refs[n %% #refs + 1], n %% 5000, n %% 120)
end
local threads_made = 0
function setup(thread)
  threads_made = threads_made + 1
  thread:set("thread_no", threads_made)  -- a global in that thread's own Lua state
end
function init(args)
  local no = thread_no or 0
  math.randomseed(os.time() * 1000 + no)
  prefix = string.format("%%08x", math.random(0, 0x7fffffff))
  acks = io.open("%(ackdir)s/acks-" .. no .. "-" .. prefix .. ".txt", "w")
end
wrk.method = "POST"
"""

_LUA_SINGLE = _LUA_COMMON + r"""
wrk.headers["Content-Type"] = "application/json"
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, event(counter))
end
function response(status, headers, body)
  if status >= 200 and status < 300 then
    local id = string.match(body, '"id": ?"([%%x%%-]+)"')
    acks:write(id or "?", "\n")
  end
end
"""

_LUA_BATCH = _LUA_COMMON + r"""
wrk.headers["Content-Type"] = "application/json"
function request()
  local parts = {}
  for i = 1, %(batch)d do
    counter = counter + 1
    parts[i] = event(counter)
  end
  return wrk.format(nil, nil, nil, "[" .. table.concat(parts, ",") .. "]")
end
"""


def _lua_list(items: list[str]) -> str:
    return ", ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items)


def write_lua(path: Path, template: str, ackdir: Path, batch: int = 1000) -> Path:
    path.write_text(template % {"pages": _lua_list(PAGES), "uas": _lua_list(USER_AGENTS),
                                "refs": _lua_list(REFERRERS), "ackdir": str(ackdir), "batch": batch})
    return path


# -- wrk -----------------------------------------------------------------------------------------

def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("[bench] installing wrk from Debian (apt-get install -y wrk) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=300,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False, timeout=300,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is required: install it with `apt-get install -y wrk` (Debian/Ubuntu)")
    return found


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(wrk: str, url: str, script: Path, connections: int, seconds: float, threads: int = 2) -> dict:
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    res = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    res["requests"] = int(m.group(1)) if m else 0
    res["seconds"] = _ms(m.group(2) + m.group(3)) / 1000 if m else seconds
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else ""
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = _ms(m.group(1)) if m else float("nan")
    res["ok"] = res["requests"] - res["non2xx"]
    res["rate"] = res["ok"] / res["seconds"] if res["seconds"] else 0.0
    return res


def wait_all_workers_ready(srv: Server, path: str = "/readyz", streak: int = 30, timeout: float = 60) -> None:
    """Each worker bootstraps on its own: wait until `streak` answers in a row (new connections,
    so any worker may take them) are 200 before measuring anything."""
    import httpx

    deadline, ok = time.monotonic() + timeout, 0
    while ok < streak:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every worker of {srv.url} became ready")
        try:
            ok = ok + 1 if httpx.get(srv.url + path, timeout=5).status_code == 200 else 0
        except httpx.HTTPError:
            ok = 0
        time.sleep(0.02)


def writer_stats(srv: Server, samples: int = 20) -> dict:
    """Writer counters of every worker that answered one of `samples` /readyz calls."""
    import httpx

    seen: dict[int, dict] = {}
    for _ in range(samples):
        try:
            body = httpx.get(srv.url + "/readyz", timeout=5, headers=srv.admin_headers).json()
        except (httpx.HTTPError, ValueError):
            continue
        if "writer" in body:
            seen[body["writer"]["pid"]] = body["writer"]
    return seen


# -- (a) direct COPY and (a') the service's write path, in-process ----------------------------------

def make_records(n: int):
    """The same rows the service stores for event_body(...), enriched by the service's Enricher."""
    from analytics.ingestion.enrich import UserAgentCache
    from analytics.ingestion.pipeline import Enricher
    from analytics.ingestion.schemas import EventCreateSchema

    enricher = Enricher(UserAgentCache(1000), max_age=timedelta(days=7), max_skew=timedelta(seconds=60))
    now = datetime.now(timezone.utc)
    return [enricher.to_record(EventCreateSchema.model_validate(event_body(i, "00000000")), now)
            for i in range(n)]


async def copy_rate(url: str, schema: str, records, *, via_service: bool, connections: int,
                    seconds: float, batch: int = 1000) -> float:
    """Rows/s over `seconds` with `connections` concurrent 1000-row transactions."""
    # (a) is the service's own COPY (binary, each column's type stated), into events alone.
    from analytics.ingestion.repository import _copy_rows, insert_events

    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
            await conn.commit()
            i = 0
            while time.monotonic() < deadline:
                rows = [r._replace(id=uuid.uuid4()) for r in records[i:i + batch]]
                i = (i + batch) % len(records)
                async with conn.transaction():
                    if via_service:
                        await insert_events(conn, rows)
                    else:
                        await _copy_rows(conn, "events", rows)
                done += len(rows)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.monotonic() - t0)


def register_service_hooks() -> int:
    """The insert hooks the service registers at startup, registered here too."""
    from analytics.ingestion.repository import hook_count
    try:
        from analytics import rollups
    except ImportError:
        return hook_count()
    install = getattr(rollups, "install", None)
    if install is not None:
        install()
    return hook_count()


# -- verification --------------------------------------------------------------------------------

def read_acks(ackdir: Path) -> list[str]:
    ids: list[str] = []
    for f in ackdir.glob("acks-*.txt"):
        ids += [ln for ln in f.read_text().split("\n") if ln]
        f.unlink()
    return ids


def missing_ids(url: str, schema: str, ids: list[str]) -> int:
    """How many acknowledged ids are not stored (an unreadable id counts as missing)."""
    good = [i for i in ids if re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", i)]
    if not good:
        return len(ids)
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        conn.execute("CREATE TEMP TABLE acked (id uuid)")
        with conn.cursor().copy("COPY acked (id) FROM STDIN") as cp:
            for i in good:
                cp.write_row((i,))
        (n,) = conn.execute("SELECT count(*) FROM acked a WHERE NOT EXISTS "
                            "(SELECT 1 FROM events e WHERE e.id = a.id)").fetchone()
    return n + len(ids) - len(good)


def count_events(url: str, schema: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()[0]


# -- the run -------------------------------------------------------------------------------------

def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def worker_stats(srv: Server, samples: int = 20) -> dict[int, dict]:
    """/readyz of every worker that answered one of `samples` calls: {pid: body}."""
    import httpx

    seen: dict[int, dict] = {}
    for _ in range(samples):
        try:
            body = httpx.get(srv.url + "/readyz", timeout=5, headers=srv.admin_headers).json()
        except (httpx.HTTPError, ValueError):
            continue
        pid = (body.get("process") or {}).get("pid") or (body.get("writer") or {}).get("pid")
        if pid:
            seen[pid] = body
    return seen


def _proc_rss(pid: int) -> int | None:
    """A local worker's resident set size from /proc (when /readyz does not report it)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_line(stats: dict[int, dict]) -> str:
    """Each worker's RSS and event-loop lag, from the `process` block of /readyz ("n/a" when the
    service does not report it)."""
    parts = []
    for pid, body in sorted(stats.items()):
        p = body.get("process")
        if not p:
            rss = _proc_rss(pid)
            parts.append(f"pid {pid}: RSS {rss / 1e6:.0f} MB (/proc), loop lag n/a" if rss
                         else f"pid {pid}: n/a")
            continue
        mb = lambda v: f"{v / 1e6:.0f} MB" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
        ms = lambda v: f"{v:.1f} ms" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
        parts.append(f"pid {pid}: RSS {mb(p.get('rss_bytes'))}, loop lag max {ms(p.get('loop_lag_max_ms'))}"
                     f" (recent {ms(p.get('loop_lag_recent_ms'))})")
    return "; ".join(parts) or "n/a (no worker answered /readyz)"


# -- "with history": the query benchmark's database ------------------------------------------------

def history_database(db: str, events: int, days: int) -> str:
    """The URL of the query benchmark's database (10M events over 90 days by default, rollups
    rebuilt), loaded with the query benchmark's own loader when it is not there yet."""
    from bench import query

    url = query._url_for(db)
    if not query._ensure_database(db, reuse=True):
        print(f"[bench] loading {db}: {events:,} events over {days} days (as `python -m bench query`) ...",
              flush=True)
        query._bootstrap(url, query.SCHEMA)
        query._load(url, events, days)
        query._rebuild(url)
    return url


# The loader's session ids all look like this; the ingest mix's never do.
_LOADED_SESSIONS = "sess-%"


def remove_bench_events(url: str, schema: str, since: datetime) -> int:
    """Take this benchmark's events out of the loaded database again (and out of its rollups, by
    the documented ranged rebuild), so the next run, and the query benchmark, find it as loaded."""
    from analytics.rollups.rebuild import rebuild

    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        (lo,) = conn.execute("""SELECT min(time) FROM events WHERE time >= %s - interval '10 days'
                                AND (session_id IS NULL OR session_id NOT LIKE %s)""",
                            (since, _LOADED_SESSIONS)).fetchone()
        if lo is None:
            return 0
        n = conn.execute("""DELETE FROM events
                            WHERE time >= %s AND (session_id IS NULL OR session_id NOT LIKE %s)""",
                         (lo, _LOADED_SESSIONS)).rowcount
        conn.commit()
        rebuild(conn, lo, datetime.now(timezone.utc) + timedelta(minutes=5))
    return n


# -- the run -------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ingest")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of (c), floor and (d) per round")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of a, a', b, c, floor, d in turn; each figure is the best of its rounds")
    ap.add_argument("--keep", action="store_true",
                    help="keep the benchmark schema; with --history, the events it wrote")
    ap.add_argument("--history", action="store_true",
                    help="measure on the query benchmark's database (10M events over 90 days) instead of an "
                         "empty schema; loads it first if it is not there")
    ap.add_argument("--db", default="analytics_bench_query", help="--history: the loaded database")
    ap.add_argument("--events", type=int, default=10_000_000, help="--history: events to load if absent")
    ap.add_argument("--days", type=int, default=90, help="--history: days of events to load if absent")
    args = ap.parse_args(argv)

    wrk = ensure_wrk()
    if args.history:
        from bench import query

        url, schema = history_database(args.db, args.events, args.days), query.SCHEMA
        with psycopg.connect(url) as conn:
            (n_loaded,) = conn.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()
        where = f"database {args.db} (schema {schema}, {n_loaded:,} events: with history)"
    else:
        url, schema = database_url(), new_schema_name("bench_ingest")
        where = f"schema {schema} (empty)"
    started = datetime.now(timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    ackdir = work / "acks"
    ackdir.mkdir()
    single_lua = write_lua(work / "single.lua", _LUA_SINGLE, ackdir)
    batch_lua = write_lua(work / "batch.lua", _LUA_BATCH, ackdir)
    conns_b = 4
    runs: dict[str, list[dict]] = {k: [] for k in ("a", "a2", "b", "c", "c0", "f", "d")}
    acks: list[str] = []
    batch_short: list[str] = []
    procs: dict[str, str] = {}
    print(f"[bench] ingest: {where}, {os.cpu_count()} cores, load average {_loadavg()}", flush=True)
    servers: list[Server] = []
    bench_env = {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    try:
        # The service: production command, default settings (access log on, to a file).
        srv = Server(url, schema, workers=2, env={"ACCESS_LOG": "true"}, log_path=work / "server.log")
        servers.append(srv.start())
        wait_all_workers_ready(srv)
        # The HTTP floor and the comparison path, same command; idle while the service is measured.
        floor = Server(url, schema, workers=2, app="bench.floor:app", log_path=work / "floor.log", keys=False,
                       env=bench_env)
        servers.append(floor.start())
        wait_all_workers_ready(floor)
        # The service without its insert hooks (bench/nohooks.py): what the rollups cost single events.
        nohooks = Server(url, schema, workers=2, app="bench.nohooks:app", log_path=work / "nohooks.log",
                         env={**bench_env, "ACCESS_LOG": "true"})
        servers.append(nohooks.start())
        wait_all_workers_ready(nohooks)
        base = None
        if not args.history:  # (d) is the issue-3 comparison, on an empty schema
            base = Server(url, schema, workers=2, app="bench.seedlike:app", log_path=work / "seedlike.log", keys=False,
                          env=bench_env)
            servers.append(base.start())
            wait_all_workers_ready(base)
        records = make_records(20_000)
        hooks = register_service_hooks()

        for rnd in range(1, args.rounds + 1):
            print(f"[bench] round {rnd}: (a) direct COPY, (a') insert_events, (b) batch, (c) single, floor"
                  + ("" if args.history else ", (d) one INSERT per request") + " ...", flush=True)
            runs["a"].append({"rate": asyncio.run(copy_rate(url, schema, records, via_service=False,
                                                            connections=conns_b, seconds=5))})
            runs["a2"].append({"rate": asyncio.run(copy_rate(url, schema, records, via_service=True,
                                                             connections=conns_b, seconds=5))})
            before = count_events(url, schema)
            b = run_wrk(wrk, srv.url + "/api/events/batch", batch_lua, conns_b, 8)
            stored_b = count_events(url, schema) - before
            b["rate"] = b["ok"] * 1000 / b["seconds"]
            if stored_b < b["ok"] * 1000:  # every event has its own id
                batch_short.append(f"round {rnd}: {b['ok'] * 1000} acknowledged, {stored_b} stored")
            runs["b"].append(b)
            read_acks(ackdir)
            procs["b"] = process_line(worker_stats(srv))

            before_stats = writer_stats(srv)
            cpu0 = cpusplit.snapshot(srv.proc.pid)
            c = run_wrk(wrk, srv.url + "/api/events/", single_lua, 64, args.seconds)
            c["cpu"] = cpusplit.per_request(cpu0, cpusplit.snapshot(srv.proc.pid), c["requests"])
            after_stats = writer_stats(srv)
            procs["c"] = process_line(worker_stats(srv))
            flushes = sum(v["flushes"] - before_stats.get(pid, {}).get("flushes", 0)
                          for pid, v in after_stats.items())
            events = sum(v["events"] - before_stats.get(pid, {}).get("events", 0)
                         for pid, v in after_stats.items())
            c["per_flush"] = events / flushes if flushes else float("nan")
            c["retries"] = sum(v["retries"] for v in after_stats.values())
            c["acked"] = len(new_acks := read_acks(ackdir))
            acks += new_acks
            runs["c"].append(c)

            cpu0 = cpusplit.snapshot(nohooks.proc.pid)
            runs["c0"].append(run_wrk(wrk, nohooks.url + "/api/events/", single_lua, 64, args.seconds))
            runs["c0"][-1]["cpu"] = cpusplit.per_request(cpu0, cpusplit.snapshot(nohooks.proc.pid),
                                                         runs["c0"][-1]["requests"])
            read_acks(ackdir)  # its events are not checked: (c) is the durability check

            cpu0 = cpusplit.snapshot(floor.proc.pid)
            runs["f"].append(run_wrk(wrk, floor.url + "/api/events/", single_lua, 64, args.seconds))
            runs["f"][-1]["cpu"] = cpusplit.per_request(cpu0, cpusplit.snapshot(floor.proc.pid),
                                                        runs["f"][-1]["requests"])
            read_acks(ackdir)
            line = (f"        a {runs['a'][-1]['rate']:,.0f} rows/s | a' {runs['a2'][-1]['rate']:,.0f} rows/s"
                    f" | b {b['rate']:,.0f} ev/s | c {c['rate']:,.0f} req/s p99 {c['p99']:.0f} ms"
                    f" | c0 {runs['c0'][-1]['rate']:,.0f} req/s"
                    f" | floor {runs['f'][-1]['rate']:,.0f} req/s")
            if base is not None:
                runs["d"].append(run_wrk(wrk, base.url + "/api/events/", single_lua, 64, args.seconds))
                read_acks(ackdir)
                line += f" | d {runs['d'][-1]['rate']:,.0f} req/s"
            print(line + f" | load {_loadavg()}", flush=True)
        missing = missing_ids(url, schema, acks)
    finally:
        for s in servers:
            s.stop()
        if args.history:
            if not args.keep:
                n = remove_bench_events(url, schema, started)
                print(f"[bench] removed this run's {n:,} events from {args.db} (ranged rollup rebuild)",
                      flush=True)
        elif not args.keep:
            drop_schema(url, schema)
        shutil.rmtree(work, ignore_errors=True)

    best = {k: max(v, key=lambda r: r["rate"]) for k, v in runs.items() if v}
    report(best, hooks=hooks, rounds=args.rounds, acked=len(acks), missing=missing,
           batch_short=batch_short, where=where, procs=procs)
    # Speed targets are reported (noisy shared machine); lost or unstored events fail the run.
    return 0 if missing == 0 and not batch_short else 1


def report(o: dict, *, hooks: int, rounds: int, acked: int, missing: int, batch_short: list[str],
           where: str, procs: dict[str, str]) -> None:
    def mark(good: bool) -> str:
        return "ok" if good else "MISSED"

    a, a2, b, c, f = (o[k]["rate"] for k in ("a", "a2", "b", "c", "f"))
    c_run, f_run, b_run = o["c"], o["f"], o["b"]
    print()
    print(f"== ingest benchmark, {where}: best of {rounds} rounds per figure (other processes on a "
          f"shared machine only slow a run down); load average now {_loadavg()} ==")
    print(f"(a)  direct COPY into events, 1,000-row txns, 4 conns        {a:>10,.0f} rows/s"
          "   (table + its indexes only)")
    print(f"(a') insert_events in-process, same rows                     {a2:>10,.0f} rows/s"
          f"   (COPY + the {hooks} insert hook(s) the service runs: rollups)")
    print(f"(b)  POST /api/events/batch, 1,000 per batch, 4 conns        {b:>10,.0f} events/s"
          f"   p50 {b_run['p50']:.0f} ms, p99 {b_run['p99']:.0f} ms; every acknowledged event stored: "
          f"{mark(not batch_short)}{' ' + '; '.join(batch_short) if batch_short else ''}")
    print(f"     b/a  = {b / a:.2f}   target >= 0.5: {mark(b / a >= 0.5)}")
    print(f"     b/a' = {b / a2:.2f}   (the same write path without HTTP: what HTTP, JSON and validation cost)")
    print(f"     workers after (b): {procs.get('b', 'n/a')}")
    print(f"(c)  POST /api/events/, group commit, 64 conns               {c:>10,.0f} req/s"
          f"   p50 {c_run['p50']:.1f} ms, p99 {c_run['p99']:.1f} ms   target >= 1,600 req/s: "
          f"{mark(c >= 1600)}, p99 <= 100 ms: {mark(c_run['p99'] <= 100)}")
    print(f"     acknowledged (2xx) in all rounds {acked:,}; not in the database: {missing}"
          f"   {mark(missing == 0)}; non-2xx {c_run['non2xx']}"
          + (f"; socket errors: {c_run['socket_errors']}" if c_run["socket_errors"] else ""))
    print(f"     {c_run['per_flush']:.1f} events per COMMIT on average; deadlock/serialization retries: "
          f"{c_run['retries']}")
    print(f"     workers after (c): {procs.get('c', 'n/a')}")
    print(f"     CPU during (c): {cpusplit.line(c_run.get('cpu'))}")
    print(f"floor: the same load against bench/floor.py (validate, 201, no database) {f:>10,.0f} req/s"
          f"   p50 {f_run['p50']:.1f} ms, p99 {f_run['p99']:.1f} ms; non-2xx {f_run['non2xx']}")
    print(f"     CPU during floor: {cpusplit.line(f_run.get('cpu'))}")
    print(f"     c/floor = {c / f:.2f}   target >= 0.6: {mark(c / f >= 0.6)}")
    if "c0" in o:
        c0, c0_run = o["c0"]["rate"], o["c0"]
        print(f"(c0) the same load against the service without its insert hooks (bench/nohooks.py: COPY only,"
              f" no rollups, no visits) {c0:,.0f} req/s   p50 {c0_run['p50']:.1f} ms, p99 {c0_run['p99']:.1f} ms")
        print(f"     CPU during (c0): {cpusplit.line(c0_run.get('cpu'))}")
        print(f"     c0/floor = {c0 / f:.2f}   c/c0 = {c / c0:.2f}   (what folding every COMMIT into the rollups costs)")
    print(f"     CPU budget: {cpusplit.budget_line(c_run.get('cpu'), f_run.get('cpu'), 0.6)}")
    if "d" in o:
        d, d_run = o["d"]["rate"], o["d"]
        print(f"(d)  one INSERT + COMMIT per request (bench/seedlike.py)     {d:>10,.0f} req/s"
              f"   p50 {d_run['p50']:.1f} ms, p99 {d_run['p99']:.1f} ms; non-2xx {d_run['non2xx']}"
              + (f"; socket errors: {d_run['socket_errors']}" if d_run["socket_errors"] else ""))
        print(f"     c/d  = {c / d:.2f}   target >= 3: {mark(c / d >= 3)}")
