"""uvicorn's HTTP protocol (httptools) with the limits it lacks: how big a request's head may be,
and how long a client may take to send its head and its body.

Without them (found by the hostile-client review) one client could:
- send a header block of tens of megabytes: httptools accepts any size, and gathering one header
  from many reads costs more than linear time (64 MB stalled a worker's event loop for 5 s), all
  before the app, its rate limits or its key checks see anything;
- hold connections open forever with a head or a body sent a byte at a time (slowloris), until
  the workers run out of file descriptors.

So a request's line and headers may hold at most HTTP_MAX_HEAD_BYTES (431 past it; counted per
read while a header is incomplete, so the work stops within one read of the limit), must arrive
within HTTP_HEAD_TIMEOUT_SECONDS of its first byte, and its body within HTTP_BODY_TIMEOUT_SECONDS
of its head (408 past either, and the connection is closed). A new connection that sends nothing
within HTTP_HEAD_TIMEOUT_SECONDS is closed without an answer; between requests, uvicorn's
keep-alive timeout closes idle connections as before.

Used by the gunicorn worker class (web/worker.py). The answers are JSON like every other error,
written straight to the transport: the app never saw the request.
"""
from __future__ import annotations

import asyncio
import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import get_settings


def _raw_response(status: int, reason: bytes, error: str, detail: str) -> bytes:
    body = json.dumps({"error": error, "detail": detail}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body))) + body


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing and feed_data raises."""


# How often each worker looks for requests past their deadline. One sweep over the worker's open
# connections, instead of a timer armed and cancelled for every request (three per request cost
# more than the rest of this class); a deadline is kept within this much.
SWEEP_EVERY_S = 0.5
# After a refusal the rest of what the client is still sending is read and dropped for a moment
# before the connection closes (nginx's lingering close): closing with unread data makes the
# kernel reset the connection, and the client would lose the answer it was sent.
LINGER_S = 2.0
LINGER_MAX_BYTES = 8 * 1024 * 1024
_sweepers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


async def _sweep(loop: asyncio.AbstractEventLoop, connections: set) -> None:
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        now = loop.time()
        for conn in list(connections):
            at = getattr(conn, "_deadline_at", None)
            if at is not None and now >= at:
                conn._too_slow()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head = settings.http_max_head_bytes
        self._head_timeout = settings.http_head_timeout_seconds
        self._body_timeout = settings.http_body_timeout_seconds
        self._in_head = True       # waiting for (the rest of) a request line and headers
        self._head_started = False  # a byte of that head has been parsed
        self._head_bytes = 0       # read while in a head: bounds the work on a header split over reads
        self._head_size = 0        # the request line and headers of a complete head
        self._stage = "head"
        self._deadline_at: float | None = None  # loop time; checked by the worker's sweep
        self._dropped: int | None = None  # bytes read and dropped after a refusal (None: not refused)

    def _refuse(self, raw: bytes) -> None:
        """Answer, then close once the client stops sending (or LINGER_S, LINGER_MAX_BYTES)."""
        if self.transport.is_closing() or self._dropped is not None:
            return
        self.transport.write(raw)
        self._dropped = 0
        try:
            self.transport.write_eof()  # the answer, then FIN; reading goes on
        except (NotImplementedError, RuntimeError, OSError):
            self.transport.close()
            return
        self._stage, self._deadline_at = "linger", self.loop.time() + LINGER_S

    def _refuse_head(self) -> None:
        self._refuse(_raw_response(
            431, b"Request Header Fields Too Large", "headers_too_large",
            f"the request line and headers exceed {self._max_head} bytes (HTTP_MAX_HEAD_BYTES)"))

    def _too_slow(self) -> None:
        self._deadline_at = None
        stage = self._stage
        if self.transport.is_closing():
            return
        if stage == "linger":
            self.transport.abort()
            return
        if stage == "head" and not self._head_started:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
            return
        if stage == "body" and self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # already answered (e.g. 413 early); the client still trickles
            return
        seconds = self._head_timeout if stage == "head" else self._body_timeout
        setting = "HTTP_HEAD_TIMEOUT_SECONDS" if stage == "head" else "HTTP_BODY_TIMEOUT_SECONDS"
        self._refuse(_raw_response(408, b"Request Timeout", "request_timeout",
                                   f"the request's {stage} did not arrive within {seconds:g} s ({setting})"))

    # asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._stage, self._deadline_at = "head", self.loop.time() + self._head_timeout
        sweeper = _sweepers.get(self.loop)
        if sweeper is None or sweeper.done():
            _sweepers[self.loop] = self.loop.create_task(_sweep(self.loop, self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline_at = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the head's size enforced and its errors answered in JSON."""
        if self._dropped is not None:  # refused: what still comes is dropped unread
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.abort()
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._head_size > self._max_head:  # raised by on_headers_complete
                self._refuse_head()
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._refuse(_raw_response(400, b"Bad Request", "bad_request",
                                           "invalid HTTP request (its request line, headers or framing)"))
            return
        # A header still incomplete after this read (httptools gathers it before any callback):
        # bound the work by the bytes read. (A read that completes the head may carry body bytes
        # too: those are not held against it.)
        if self._in_head and self._head_bytes > self._max_head:
            self._refuse_head()

    # httptools callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._stage, self._deadline_at = "head", self.loop.time() + self._head_timeout

    def on_headers_complete(self) -> None:
        # Many headers that each fit in a read: their total, counted only when the reads of this
        # head (with whatever body bytes came along) were more than the limit.
        if self._head_bytes > self._max_head:
            self._head_size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if self._head_size > self._max_head:
                raise _HeadTooLarge()
        self._in_head = False
        self._stage, self._deadline_at = "body", self.loop.time() + self._body_timeout
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline_at = None
        self._in_head, self._head_started, self._head_bytes = True, False, 0  # the next request's
        super().on_message_complete()
