"""/readyz describes the worker that answered (`process`: pid, RSS, event-loop lag), and the
loop-lag monitor behind it sees a stall of the event loop."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from analytics.web.looplag import LoopLagMonitor, rss_bytes


def test_readyz_has_the_process_object(client, server):
    body = client.get("/readyz", headers=server.admin_headers).json()
    process = body["process"]
    assert set(process) == {"pid", "rss_bytes", "loop_lag_max_ms", "loop_lag_recent_ms"}
    assert isinstance(process["pid"], int) and process["pid"] == body["writer"]["pid"]
    assert process["pid"] != os.getpid()  # the worker's, not the test's
    assert isinstance(process["rss_bytes"], int) and 20 << 20 < process["rss_bytes"] < 4 << 30
    for key in ("loop_lag_max_ms", "loop_lag_recent_ms"):
        assert isinstance(process[key], (int, float)) and process[key] >= 0
    assert process["loop_lag_recent_ms"] <= process["loop_lag_max_ms"]


def test_rss_is_this_process_resident_memory():
    before = rss_bytes()
    ballast = bytearray(64 << 20)  # touched: zero-filled pages are resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    assert rss_bytes() - before > 48 << 20
    del ballast


def test_the_monitor_sees_a_stall_of_the_loop():
    async def scenario():
        monitor = LoopLagMonitor(interval_s=0.01, warmup_s=0)
        monitor.start()
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # holds the event loop, as a slow parse would
        await asyncio.sleep(0.05)
        await monitor.stop()
        return monitor.max_lag_s, monitor.recent_max_s()

    max_lag, recent = asyncio.run(scenario())
    # Lower bounds only: a noisy machine can make the lag longer, never shorter.
    assert max_lag >= 0.25
    assert recent >= 0.25


def test_the_recent_maximum_forgets_after_its_window():
    monitor = LoopLagMonitor(window_s=10)
    monitor.record(100.2, 0.5)
    monitor.record(100.7, 0.1)
    monitor.record(103.0, 0.02)
    assert monitor.recent_max_s(now=105.0) == 0.5
    assert monitor.recent_max_s(now=111.5) == 0.02  # second 100 is out of the window
    assert monitor.recent_max_s(now=114.0) == 0.0
    assert monitor.max_lag_s == 0.5  # the maximum since start stays


def test_the_warmup_is_not_counted():
    monitor = LoopLagMonitor(warmup_s=5)
    monitor._counting_from = 105.0  # as start() at loop time 100 sets it
    monitor.woke(due=101.0, now=101.5)  # imports, the schema bootstrap: not counted
    assert monitor.max_lag_s == 0.0 and monitor.recent_max_s(now=101.5) == 0.0
    monitor.woke(due=106.0, now=106.25)
    assert monitor.max_lag_s == pytest.approx(0.25) == monitor.recent_max_s(now=106.5)
