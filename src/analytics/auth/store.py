"""The valid API keys, held in memory by every worker and refreshed from the database.

Checking a key is one SHA-256 and one dict lookup: no database round trip per request. An
unknown key is never looked up in the database (a flood of wrong keys costs each worker a hash
and nothing else); a new key starts working, and a revoked one stops, at the next refresh,
every KEYS_REFRESH_SECONDS (5 by default, so within 10 s on every worker and replica).
`last_used_at` is written by the same task, in one UPDATE for every key used since the last
refresh.

The refresh has its own connection (not one of the read or write pools: a pool of one read
connection, or a writer under load, must not delay revocations, nor the other way round).
When the database cannot be reached, the last table read stays in force.
"""
from __future__ import annotations

import asyncio
import logging

import psycopg

from ..config import Settings
from ..db import quote_ident
from .keys import key_hash, looks_like_key
from .principal import SHARE, Principal

log = logging.getLogger("analytics.auth")

_QUERY_TIMEOUT_MS = 3000


class KeyStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = max(0.05, settings.keys_refresh_s)
        self._keys: dict[bytes, Principal] = {}
        # Keys seen valid since the last refresh, by their text: a dashboard sends the same key on
        # every request, so its shape check and hash are done once per refresh, not per request.
        # Only valid keys enter, so it holds at most as many entries as the table (junk keys
        # never do), and a refresh empties it: a revoked key stops working at the same moment.
        self._seen: dict[str, tuple[bytes, Principal]] = {}
        self._used: set[bytes] = set()
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task | None = None
        self._failing = False
        self.loaded = False  # False until the first successful read: keys are unknown, not absent

    # -- per request -------------------------------------------------------------------------
    def lookup(self, key: str) -> Principal | None:
        """The key's principal, or None when it is not a valid key (any more)."""
        seen = self._seen.get(key)
        if seen is not None:
            self._used.add(seen[0])
            return seen[1]
        if not looks_like_key(key):
            return None
        h = key_hash(key)
        principal = self._keys.get(h)
        if principal is not None:
            self._used.add(h)
            self._seen[key] = (h, principal)
        return principal

    # -- refresh -----------------------------------------------------------------------------
    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = await psycopg.AsyncConnection.connect(
                self.settings.database_url, autocommit=True,
                connect_timeout=max(1, int(self.settings.db_timeout)), application_name="analytics-keys")
            await conn.execute(f"SET statement_timeout = {_QUERY_TIMEOUT_MS}")
            await conn.execute("SELECT set_config('search_path', %s, false)",
                               (f"{quote_ident(self.settings.db_schema)}, public",))
            self._conn = conn
        return self._conn

    async def refresh(self) -> None:
        """Write last_used_at for the keys used since the last refresh, then read the valid keys."""
        used, self._used = self._used, set()
        try:
            conn = await self._connection()
            if used:
                await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_hash = ANY(%s)",
                                   (list(used),))
            cur = await conn.execute("SELECT key_hash, name, scope FROM api_keys WHERE revoked_at IS NULL")
            rows = await cur.fetchall()
        except BaseException as exc:  # a database error, or the loop's timeout cancelling us
            self._used |= used  # written next time
            if not self._failing:
                log.warning("api keys: refresh failed, keeping the last table read (%s)", type(exc).__name__)
            self._failing = True
            conn, self._conn = self._conn, None
            if conn is not None and not conn.closed:
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001 - a broken connection; it is dropped anyway
                    pass
            raise
        self._keys = {bytes(h): Principal("share" if scope == SHARE else "key", name, frozenset((scope,)))
                      for h, name, scope in rows}
        self._seen = {}
        if self._failing:
            log.info("api keys: refresh works again (%d keys)", len(self._keys))
        self._failing = False
        self.loaded = True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                # Bounded: packets silently dropped would otherwise hang the refresh for good.
                async with asyncio.timeout(max(5.0, 2 * self.interval)):
                    await self.refresh()
            except (psycopg.Error, OSError, TimeoutError):
                pass
            except Exception:  # noqa: BLE001 - the task must outlive any one failure
                log.exception("api keys: refresh failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="api-keys-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._used:
            try:
                await self.refresh()  # the last uses, on the way out
            except Exception:  # noqa: BLE001
                pass
        if self._conn is not None:
            await self._conn.close()
