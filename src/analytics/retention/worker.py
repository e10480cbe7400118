"""The background task of every worker: try a retention run when one may be due.

Every worker of every API replica polls (at start, then every min(RETENTION_INTERVAL_SECONDS,
1 hour), with jitter); `run.run` takes the advisory lock and checks `last_run_at`, so one of
them does the work once per interval and the others find nothing to do. The run is blocking
psycopg code in a thread, with its own connection (which holds the lock): no read or write
connection of the worker is taken, and the event loop never waits on it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading

from ..config import Settings
from . import run

log = logging.getLogger("analytics.retention")
_MAX_POLL_S = 3600.0


class RetentionTask:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.retention_days > 0 or settings.rollup_retention_days > 0
        self._stop = threading.Event()
        self._task: asyncio.Task | None = None
        self._thread_run: asyncio.Future | None = None

    def start(self, ready: asyncio.Event) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._loop(ready), name="retention")

    async def _loop(self, ready: asyncio.Event) -> None:
        await ready.wait()  # the schema (and its retention_state table) exists
        poll = min(self.settings.retention_interval_s, _MAX_POLL_S)
        await asyncio.sleep(random.uniform(0, min(poll, 5.0)))
        while True:
            try:
                self._thread_run = asyncio.ensure_future(
                    asyncio.to_thread(run.run, self.settings, stop=self._stop))
                await asyncio.shield(self._thread_run)
            except asyncio.CancelledError:
                raise
            except run.Stopped:
                return
            except Exception as exc:  # an outage, a lock that would not come: the next poll retries
                log.warning("retention run failed: %s: %s", type(exc).__name__,
                            (str(exc).splitlines() or [""])[0])
            await asyncio.sleep(poll * random.uniform(0.8, 1.2))

    async def stop(self) -> None:
        """Stop between steps of a run in progress (the next run, anywhere, finishes it)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._thread_run is not None and not self._thread_run.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._thread_run), timeout=10)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                pass
