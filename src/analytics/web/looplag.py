"""How late this worker's event loop runs: a task that sleeps a short interval and records by
how much it woke up late. Whatever held the loop (a parse, a big JSON encode, a GC pause) shows
as lag; every other request on the worker waited at least that long.

Kept per worker and reported by /readyz (`process.loop_lag_max_ms`, `loop_lag_recent_ms`): the
maximum since startup (after a warm-up, when imports and the schema bootstrap may hold the
loop), and the maximum over the last `window_s` seconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
from collections import deque

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class LoopLagMonitor:
    def __init__(self, interval_s: float = 0.02, window_s: float = 10.0,
                 warmup_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.warmup_s = warmup_s
        self.max_lag_s = 0.0
        # One slot per second: (second, max lag in it). Cheap to update 50 times a second and
        # to read; the recent maximum is exact to a second.
        self._seconds: deque[list[float]] = deque(maxlen=max(1, math.ceil(window_s)) + 1)
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counting_from = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._counting_from = self._loop.time() + self.warmup_s
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.woke(due, loop.time())

    def woke(self, due: float, now: float) -> None:
        """The sleeper was due at `due` and ran at `now` (loop time, seconds)."""
        if now >= self._counting_from:
            self.record(now, max(0.0, now - due))

    def record(self, now: float, lag_s: float) -> None:
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
        second = math.floor(now)
        if self._seconds and self._seconds[-1][0] == second:
            if lag_s > self._seconds[-1][1]:
                self._seconds[-1][1] = lag_s
        else:
            self._seconds.append([second, lag_s])

    def recent_max_s(self, now: float | None = None) -> float:
        if now is None:
            now = self._loop.time() if self._loop is not None else 0.0
        since = math.floor(now) - self.window_s
        return max((lag for second, lag in self._seconds if second >= since), default=0.0)


def rss_bytes() -> int:
    """Resident memory now (/proc/self/statm: one read, no parsing of status); where there is
    no /proc, the peak from getrusage (kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def process_info(monitor: LoopLagMonitor | None) -> dict:
    """The `process` object of /readyz."""
    return {
        "pid": os.getpid(),
        "rss_bytes": rss_bytes(),
        "loop_lag_max_ms": round(monitor.max_lag_s * 1000, 3) if monitor else 0.0,
        "loop_lag_recent_ms": round(monitor.recent_max_s() * 1000, 3) if monitor else 0.0,
    }
