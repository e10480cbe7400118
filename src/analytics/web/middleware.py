"""Request ids and the access log, as plain ASGI middleware (no per-request task overhead)."""
from __future__ import annotations

import json
import re
import secrets
import time
import uuid

from starlette.exceptions import HTTPException as StarletteHTTPException

from ..privacy.visitor import access_hash
from .client import client_ip
from .logging import access_log, request_id_var

CLIENT_CLOSED = 499  # what the access log and the metrics record for a client gone mid-request
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Keys the access log's client hash before this worker has the day's salt (its first moments,
# or while the database is down): random per process, so the raw address is never written.
_FALLBACK_KEY = secrets.token_bytes(32)


def _client_hash(scope) -> str:
    """The client address, keyed with today's salt (privacy/visitor.access_hash): lines of one
    client can be told apart within a day, and the address cannot be read back."""
    state = scope["app"].state if "app" in scope else None
    salts = getattr(state, "salts", None)
    salt = (salts.cached() if salts is not None else None) or _FALLBACK_KEY
    return access_hash(salt, client_ip(scope, getattr(state, "trusted_networks", ())))


class RequestContextMiddleware:
    """Request ids, the access log, and `observe(scope, status, seconds)` once per answer (the
    request metrics: this middleware sees the fast path and FastAPI's path alike)."""

    def __init__(self, app, access_log: bool = True, observe=None) -> None:
        self.app = app
        self.access_log = access_log
        self.observe = observe

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = ""
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                rid = v.decode("latin-1")
                break
        if not _VALID_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500
        started = disconnected = False

        async def watched_receive():
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_with_id(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, watched_receive, send_with_id)
        finally:
            if disconnected and not started:
                # The client left before an answer (mid-body): nginx's 499, not a server error
                # (any client could otherwise fake a 5xx rate for the operator's alerts). An
                # answer the app did start, a 500 included, is recorded as it was.
                status = CLIENT_CLOSED
            elapsed = time.perf_counter() - start
            if self.observe is not None:
                self.observe(scope, status, elapsed)
            if self.access_log:
                access_log(scope.get("method"), scope.get("path"), status,
                           round(elapsed * 1000, 2), rid, _client_hash(scope))
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413 before reading them into memory: by Content-Length
    when there is one, else while reading. `max_bytes` is the limit of every path but those in
    `path_limits` (the single-event endpoint has its own, smaller one); `setting` names what
    to change, in the answer."""

    def __init__(self, app, max_bytes: int, path_limits: dict[str, tuple[int, str]] | None = None,
                 setting: str = "MAX_BODY_BYTES") -> None:
        self.app = app
        self.default = (max_bytes, setting)
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes, setting = self.path_limits.get(scope["path"], self.default)
        for k, v in scope.get("headers", ()):
            if k == b"content-length" and v.isdigit() and int(v) > max_bytes:
                return await _too_large(send, max_bytes, setting)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _BodyTooLarge(max_bytes, setting)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send, max_bytes, setting)


def too_large_detail(max_bytes: int, setting: str = "MAX_BODY_BYTES") -> list[dict]:
    return [{"loc": ["body"], "msg": f"request body exceeds {max_bytes} bytes ({setting})",
             "type": "too_large", "limit": max_bytes}]


class _BodyTooLarge(StarletteHTTPException):
    """Raised from receive() while the app reads the body. An HTTPException, because FastAPI
    turns any other exception raised while reading the body into a 400."""

    def __init__(self, max_bytes: int, setting: str) -> None:
        super().__init__(status_code=413, detail=too_large_detail(max_bytes, setting))


async def _too_large(send, max_bytes: int, setting: str) -> None:
    body = json.dumps({"error": "body_too_large", "detail": too_large_detail(max_bytes, setting)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SchemaReadyMiddleware:
    """Until the schema exists, anything that needs the database gets a clean 503.

    Plain ASGI on purpose: starlette's BaseHTTPMiddleware (`@app.middleware("http")`) costs a
    task group and a memory stream per request, about a quarter of the single-event path's CPU.
    """

    def __init__(self, app, no_db_paths: set[str] | frozenset[str]) -> None:
        self.app = app
        self.no_db_paths = frozenset(no_db_paths)

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope["path"] not in self.no_db_paths
                and not scope["app"].state.schema_ready.is_set()):
            from .errors import unavailable_response
            return await unavailable_response()(scope, receive, send)
        return await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD wherever GET is served (RFC 9110 §9.3.2: uptime checkers and CDNs probe with it; FastAPI
    routes answered it 405): the request goes on as a GET, and the answer keeps its status and
    headers (Content-Length included) without its body. Not for `skip` paths, whose GET does
    work a HEAD should not (the export streams every matching event): those stay 405."""

    def __init__(self, app, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.skip = skip

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"].startswith(self.skip):
            return await self.app(scope, receive, send)

        async def without_body(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)
