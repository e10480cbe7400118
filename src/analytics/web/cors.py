"""CORS, split by route: trackers post events from every site, dashboards read from a few.

Ingest routes (POST /api/events/ and /api/events/batch) answer any origin: the tracker runs on
the customer's pages, and what it sends is public anyway (INGEST_ALLOWED_HOSTS filters by host,
auth/guards.py). Every other route answers only CORS_ORIGINS (none by default): a read key in a
page on some other site must not be usable from there by a browser.

A preflight (OPTIONS) is routed by the method it asks about (`Access-Control-Request-Method`):
/api/events/ is both the ingest POST and seed 004's read GET. Starlette's CORSMiddleware does the
work in both cases.
"""
from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

INGEST_PATHS = frozenset({"/api/events/", "/api/events/batch"})


def _is_ingest(scope) -> bool:
    if scope["path"] not in INGEST_PATHS:
        return False
    method = scope["method"]
    if method == "OPTIONS":
        for k, v in scope.get("headers", ()):
            if k == b"access-control-request-method":
                method = v.decode("latin-1").strip().upper()
                break
    return method == "POST"


class _JsonCors(CORSMiddleware):
    """Starlette's, with a refused preflight answered in JSON like every other error (it is
    text/plain there)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k not in ("content-type", "content-length")}
        return JSONResponse({"error": "cors_refused", "detail": f"{response.body.decode()}: this route answers "
                             "other origins only as CORS_ORIGINS allows, and only its own methods"},
                            status_code=response.status_code, headers=headers)


class SplitCors:
    def __init__(self, app, read_origins: tuple[str, ...] | list[str]) -> None:
        # Each side states only the methods it serves (a preflight for another is refused).
        self.ingest = _JsonCors(app, allow_origins=["*"], allow_methods=["POST"], allow_headers=["*"],
                                allow_credentials=False)
        self.reads = _JsonCors(app, allow_origins=list(read_origins), allow_methods=["GET", "HEAD"],
                               allow_headers=["*"], allow_credentials=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _is_ingest(scope):
            return await self.ingest(scope, receive, send)
        return await self.reads(scope, receive, send)
