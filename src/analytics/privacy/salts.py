"""The daily salts of the visitor hash, shared by every worker and replica through the database.

Table `visitor_salts (day date PRIMARY KEY, salt bytea)`: the salt of a UTC day is created by
whoever needs it first (INSERT ... ON CONFLICT DO NOTHING, then read back, so every process
ends up with the same bytes), and deleted once it is two days old: the salt of day D is used
during D and gone when D+2 begins, about 48 hours after it was made (the Plausible scheme). A
visitor hashed on one day cannot be matched with the same person on another.

Each worker keeps the salts of today and tomorrow in memory. A background task re-reads them
every VISITOR_SALT_REFRESH_SECONDS and just after each UTC midnight, so the day change finds
tomorrow's salt already cached and a request never waits for the database because of hashing.
Only when no salt is cached at all (the database was down when the worker started) does a
request fetch it, once for all the requests waiting.

An operator (or a test) may replace today's salt (`python -m analytics privacy rotate`): every
worker picks the new one up at its next refresh, and today's visitors then count anew.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import date, timedelta

import psycopg
from psycopg import sql

from ..db import DatabaseUnavailable, ReadsBusy, connection

log = logging.getLogger("analytics.privacy")

TABLE = "visitor_salts"
SALT_BYTES = 32  # blake2b takes keys of up to 64 bytes
KEEP_DAYS = 2    # today's and yesterday's; older ones are deleted
_EPOCH = date(1970, 1, 1)


def utc_day(now: float | None = None) -> int:
    """Days since 1970-01-01 in UTC (cheap enough for every request)."""
    return int((time.time() if now is None else now) // 86400)


def day_date(day: int) -> date:
    return _EPOCH + timedelta(days=day)


def salts_ddl(schema: str) -> list[sql.Composable]:
    """The table as this code expects it (revision 0004 made it)."""
    return [sql.SQL("""CREATE TABLE IF NOT EXISTS {}.{} (
        day  date  PRIMARY KEY,
        salt bytea NOT NULL)""").format(sql.Identifier(schema), sql.Identifier(TABLE))]


_ENSURE = f"INSERT INTO {TABLE} (day, salt) SELECT d, s FROM unnest(%s::date[], %s::bytea[]) AS x(d, s) " \
          "ON CONFLICT (day) DO NOTHING"
_READ = f"SELECT day, salt FROM {TABLE} WHERE day = ANY(%s::date[])"
_PRUNE = f"DELETE FROM {TABLE} WHERE day < %s::date"


class SaltKeeper:
    """The salts of today and tomorrow, cached per worker (see the module docstring)."""

    def __init__(self, pool, refresh_s: float = 3600.0) -> None:
        self.pool = pool
        self.refresh_s = max(0.05, refresh_s)
        self._salts: dict[int, bytes] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    def cached(self, day: int | None = None) -> bytes | None:
        """Today's salt if this worker has it (the request path: a dict lookup)."""
        return self._salts.get(utc_day() if day is None else day)

    async def current(self) -> bytes:
        """Today's salt; fetched (one round trip) only when it is not cached. Raises
        DatabaseUnavailable when it cannot be had."""
        salt = self.cached()
        if salt is not None:
            return salt
        async with self._lock:  # concurrent requests share one fetch
            salt = self.cached()
            if salt is None:
                try:
                    await self.load()
                except (ReadsBusy, psycopg.Error) as exc:  # busy or down: a 503, never a 500
                    raise DatabaseUnavailable() from exc
                salt = self.cached()
        if salt is None:  # pragma: no cover - load() raises first
            raise DatabaseUnavailable()
        return salt

    async def load(self) -> None:
        """Create the salts of today and tomorrow if missing, read them, delete expired ones."""
        today = utc_day()
        days = [day_date(today), day_date(today + 1)]
        fresh = [secrets.token_bytes(SALT_BYTES) for _ in days]
        async with connection(self.pool) as conn:
            async with conn.transaction():
                await conn.execute(_ENSURE, (days, fresh))
                cur = await conn.execute(_READ, (days,))
                rows = await cur.fetchall()
                await conn.execute(_PRUNE, (day_date(today - KEEP_DAYS + 1),))
        self._salts = {(d - _EPOCH).days: bytes(s) for d, s in rows}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="visitor-salts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _next_wait(self) -> float:
        """Until the next refresh: the period, or just past the next UTC midnight if sooner."""
        now = time.time()
        to_midnight = 86400 - now % 86400 + 0.5
        return min(self.refresh_s, to_midnight)

    async def _run(self) -> None:
        while True:
            try:
                await self.load()
                wait = self._next_wait()
            except Exception as exc:  # noqa: BLE001 - keep refreshing; requests fetch if needed
                log.warning("visitor salts not refreshed: %s", type(exc).__name__)
                wait = min(self.refresh_s, 5.0)
            await asyncio.sleep(wait)
