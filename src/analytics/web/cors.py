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

from starlette.middleware.cors import CORSMiddleware

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


class SplitCors:
    def __init__(self, app, read_origins: tuple[str, ...] | list[str]) -> None:
        common = dict(allow_credentials=False, allow_methods=["*"], allow_headers=["*"])
        self.ingest = CORSMiddleware(app, allow_origins=["*"], **common)
        self.reads = CORSMiddleware(app, allow_origins=list(read_origins), **common)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _is_ingest(scope):
            return await self.ingest(scope, receive, send)
        return await self.reads(scope, receive, send)
