"""One export: a producer task that reads the COPY, and the response body that sends its chunks.

Why a task of its own: a client disconnect must stop the query at once. Starlette learns of the
disconnect while the body is being sent and cancels the body through an anyio cancel scope, which
cancels every later await too, so psycopg could not clean up the COPY (send the cancel request,
read to its end) in there. The producer is a plain asyncio task: the body's `finally` cancels it
once, psycopg cancels the statement in the server and returns the connection to the pool.

Memory is constant: rows are gathered into chunks of CHUNK_BYTES, and at most QUEUE_CHUNKS of
them wait for the client; a slow client slows the COPY (the producer waits for room), a client
that reads nothing for STALL_SECONDS ends the export.
"""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from psycopg import AsyncClientCursor
from psycopg_pool import AsyncConnectionPool
from starlette.responses import StreamingResponse

from ..db import connection
from ..replicas import ReadRouter
from .statement import SETTINGS

log = logging.getLogger("analytics.export")

CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 8
# A client that takes no chunk for this long is gone or stuck: its export (a connection, a
# database core) ends rather than waiting for it.
STALL_SECONDS = 60.0
# Compress chunks in a thread (zlib releases the GIL): the event loop keeps serving other
# requests while ~100 MB/s of rows are compressed. Level 1: about 5x smaller for event rows, at
# several times the speed of the default level.
GZIP_LEVEL = 1

_STARTED = object()
_END = object()


class ExportAborted(Exception):
    """The export stopped before its end (the database failed, the time limit, a stalled client).
    Raised from the body after the 200 has been sent: the connection is closed without the
    final chunk, so the client sees a truncated transfer, never a short file that looks whole."""


class ExportStream:
    def __init__(self, pool: AsyncConnectionPool | ReadRouter, statement: str, params: dict, *,
                 gzip: bool, timeout_ms: int, on_close: Callable[[], None],
                 encode: Callable[[list[bytes]], bytes] | None = None) -> None:
        # A pool, or the read router (DATABASE_READ_URLS): a replica when one is usable.
        self.pool = pool
        self.statement = statement
        self.params = params
        self.timeout_ms = max(0, int(timeout_ms))
        self._on_close: Callable[[], None] | None = on_close
        self.rows = 0
        # A chunk's rows as COPY wrote them -> the bytes sent (export/ndjson.py); None: as they are.
        self._encode = encode
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzip else None
        self._queue: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Borrow a connection and start the COPY; errors until then (no connection, the database
        down, the statement refused) are raised here, so they are answered as errors, not 200."""
        self._task = asyncio.create_task(self._produce(), name="export")
        try:
            first = await self._queue.get()
        except BaseException:
            self._task.cancel()
            self._close()  # a task cancelled before it ran never reaches its own finally
            raise
        if first is not _STARTED:
            raise first

    async def body(self) -> AsyncIterator[bytes]:
        """The response body: the producer's chunks, until its end or its error."""
        assert self._task is not None
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise ExportAborted(f"export stopped after {self.rows} rows: {type(item).__name__}") from item
                yield item
        finally:
            # A disconnect (the body is cancelled) or the end: stop the COPY if it still runs.
            self.stop()

    def stop(self) -> None:
        """Stop the COPY if it still runs (idempotent): the response calls it however it ends,
        also when it ends before the body was ever iterated (a disconnect right after the 200)."""
        if self._task is not None:
            self._task.cancel()

    @asynccontextmanager
    async def _connection(self):
        if isinstance(self.pool, ReadRouter):
            async with self.pool.connection() as (conn, _target):
                yield conn
        else:
            async with connection(self.pool) as conn:
                yield conn

    # -- producer ------------------------------------------------------------------------------
    async def _produce(self) -> None:
        started = time.monotonic()
        try:
            async with self._connection() as conn:
                # A long export is legitimate: not READ_STATEMENT_TIMEOUT_MS, its own limit
                # (EXPORT_MAX_SECONDS); SET LOCAL ends with this transaction.
                await conn.execute(f"SET LOCAL statement_timeout = {self.timeout_ms}")
                for setting in SETTINGS:  # the output formats the statement relies on
                    await conn.execute(setting)
                async with AsyncClientCursor(conn).copy(self.statement, self.params) as copy:
                    await self._put(_STARTED)
                    rows: list[bytes] = []
                    size = 0
                    async for row in copy:
                        rows.append(row)
                        size += len(row)
                        if size >= CHUNK_BYTES:
                            await self._send(self._chunk(rows))
                            rows, size = [], 0
                    await self._send(self._chunk(rows), final=True)
                await conn.rollback()  # nothing to keep; ends the read's snapshot now
            await self._put(_END)
            log.info("export finished", extra={"rows": self.rows,
                                               "seconds": round(time.monotonic() - started, 3)})
        except asyncio.CancelledError:
            raise  # the body is gone: psycopg has cancelled the statement on the way out
        except BaseException as exc:  # noqa: BLE001 - handed to the body, which ends the response
            log.warning("export stopped: %s", type(exc).__name__, extra={"rows": self.rows})
            self._fail(exc)
        finally:
            self._close()

    def _close(self) -> None:
        """Release what the export holds (its EXPORT_CONCURRENCY slot), once."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def _chunk(self, rows: list[bytes]) -> bytes:
        self.rows += len(rows)
        return self._encode(rows) if self._encode is not None else b"".join(rows)

    async def _send(self, data: bytes, final: bool = False) -> None:
        if self._compressor is not None:
            data = await asyncio.to_thread(self._compress, data, final)
        if data:
            await self._put(data)

    def _compress(self, data: bytes, final: bool) -> bytes:
        out = self._compressor.compress(data)
        return out + self._compressor.flush() if final else out

    async def _put(self, item: object) -> None:
        try:
            async with asyncio.timeout(STALL_SECONDS):
                await self._queue.put(item)
        except TimeoutError:
            raise _Stalled() from None

    def _fail(self, exc: BaseException) -> None:
        """Hand `exc` to whoever reads next (start() or the body), dropping undelivered chunks."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(exc)


class ExportResponse(StreamingResponse):
    """The stream's body, and the stream stopped however the response ends."""

    def __init__(self, stream: ExportStream, **kwargs) -> None:
        super().__init__(stream.body(), **kwargs)
        self.stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.stop()


class _Stalled(Exception):
    """The client took no chunk for STALL_SECONDS."""
