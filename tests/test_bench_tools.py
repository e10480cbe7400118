"""The benchmarks' own parts: bench/cpusplit.py (who used the cores during a load, and what a ratio
target allows), and the variants of the service they run (bench/nohooks.py, bench/deferred_app.py,
bench/without10.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import cpusplit  # noqa: E402


def test_per_request_splits_cpu_seconds_into_microseconds_per_request():
    before = cpusplit.Snapshot(workers=1.0, database=2.0, loadgen=0.5, busy=10.0, idle=5.0, stolen=0.0)
    after = cpusplit.Snapshot(workers=2.0, database=2.5, loadgen=0.6, busy=11.8, idle=5.1, stolen=0.1)
    s = cpusplit.per_request(before, after, 1000)
    assert round(s["workers"]) == 1000 and round(s["database"]) == 500 and round(s["loadgen"]) == 100
    assert round(s["other"]) == 200  # busy 1.8 s, of which 1.6 s is accounted for
    assert abs(s["idle_share"] - 0.1 / 2.0) < 1e-9 and abs(s["stolen_share"] - 0.1 / 2.0) < 1e-9
    assert "workers 1000 us, database 500 us, wrk 100 us, other 200 us" in cpusplit.line(s)


def test_snapshot_counts_the_cpu_of_a_servers_children():
    """The 'server' here is a process whose child (started after the first snapshot) burns CPU:
    its seconds show up as workers'."""
    burner = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time\ntime.sleep(1)\np = subprocess.Popen([sys.executable, '-c', {burner!r}])\n"
                               "time.sleep(30)"])
    try:
        time.sleep(0.2)
        first = cpusplit.snapshot(parent.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = cpusplit.snapshot(parent.pid)
            if now.workers - first.workers >= 0.2:
                break
            time.sleep(0.1)
        assert now.workers - first.workers >= 0.2
        assert now.busy > first.busy
    finally:
        for pid in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split():
            subprocess.run(["kill", pid], check=False)
        parent.kill()
        parent.wait()


def test_a_database_process_that_ends_between_snapshots_does_not_count_negative():
    before = cpusplit.Snapshot(0.0, {"10": 5.0, "11": 3.0}, 0.0, 1.0, 1.0, 0.0)
    after = cpusplit.Snapshot(0.0, {"10": 5.5, "12": 0.25}, 0.0, 2.0, 1.0, 0.0)  # 11 ended, 12 started
    assert round(cpusplit.per_request(before, after, 1)["database"]) == 750_000


def test_budget_says_what_a_ratio_target_allows_per_request():
    floor = {"workers": 300.0, "database": 0.0, "loadgen": 50.0, "other": 10.0}
    service = {"workers": 520.0, "database": 340.0, "loadgen": 50.0, "other": 0.0}
    b = cpusplit.budget(service, floor, 0.6)
    assert round(b["allowed"]) == 600 and round(b["used"]) == 910
    assert abs(b["ceiling"] - 360 / 570) < 1e-9
    line = cpusplit.budget_line(service, floor, 0.6)
    assert "allows 600 us" in line and "used 910 us" in line and "c/floor 0.63" in line
    assert cpusplit.budget_line(None, floor, 0.6) == "n/a"


def test_nohooks_app_is_the_service_without_its_insert_hooks():
    """bench/nohooks.py, the (c0) load of the ingest benchmark: the service's app with no hook,
    where the service itself registers the rollups' and the visits' hooks."""
    assert _hooks_of("main") == 2
    assert _hooks_of("bench.nohooks") == 0


def test_deferred_app_only_queues_the_rows_for_the_folder():
    """bench/deferred_app.py: one hook, whose statement only copies `ins` into the queue."""
    assert _hooks_of("bench.deferred_app") == 1
    code = ("import bench.deferred_app\nfrom analytics.ingestion import repository as r\n"
            "print(r.hook_ctes(r._hooks)[0].as_string(None))")
    out = _run(code)
    assert "INSERT INTO pending_fold SELECT * FROM ins" in out and "rollup_" not in out


def test_without10_app_folds_everything_but_the_unique_visitors():
    """bench/without10.py, the 'before' of `before_after --issue-10-off`: the service's hooks,
    whose statement maintains the sessions' state and rollups but not the visitors' (issue 10)."""
    def statement(module: str) -> str:
        code = (f"import {module}\nfrom analytics.ingestion import repository as r\n"
                "print(' '.join(c.as_string(None) for c in r.hook_ctes(r._hooks)))")
        return _run(code)

    service, without = statement("main"), statement("bench.without10")
    assert "rollup_visitors" in service and "rollup_sessions" in service
    assert "rollup_visitors" not in without and "rollup_sessions" in without
    assert "rollup_agg_total_1m" in without and "visits" in without


def _hooks_of(module: str) -> int:
    """How many insert hooks importing `module` (an app) registers."""
    return int(_run(f"import {module}\nfrom analytics.ingestion.repository import hook_count\n"
                    "print(hook_count())").strip().splitlines()[-1])


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}).stdout


def test_protocol_bench_serves_keep_alive_requests_through_both_protocols():
    """bench/protocol.py: both protocols answer its requests on one kept-alive connection (the
    bench asserts the connection stays open) and a CPU time is measured for each."""
    import asyncio

    from bench import protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from analytics.web.http import GuardedHttpToolsProtocol
    for cls in (HttpToolsProtocol, GuardedHttpToolsProtocol):
        assert asyncio.run(protocol._per_request_us(cls, 50)) > 0
