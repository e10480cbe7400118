"""GET /dashboard: the built-in dashboard page, and its static assets, read once at import.

No build step: static/dashboard/ holds the page (index.html), its style and its module script;
static/vendor/uplot/ the charting library (uPlot, vendored from npm by `make uplot`). The page
reads the public stats API only (/api/v1/stats/*, with a read key or a share link's token) and
/openapi.json, to learn which metrics and dimensions this server offers.

Caching: the assets are referenced from the page with `?v=<hash of their bytes>`, so they are
cached for a year as immutable at that URL (a new release is a new URL); at any other (no `v`, an
old one) they are short-cached like the page, and revalidated by ETag either way. The
page itself is short-cached (a minute), also with an ETag, so a release reaches browsers soon.

Security headers on the page: a strict Content-Security-Policy (scripts and styles from this
origin only, no inline script, no framing), no Referer, no MIME sniffing. A share link's token
is in the URL fragment, which browsers never send (not in requests, not in Referer).
"""
from __future__ import annotations

import gzip
import hashlib
import html
import json
import typing
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .tracker import _accepts_gzip

STATIC = Path(__file__).resolve().parent / "static"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
PAGE_CACHE = "public, max-age=60, must-revalidate"
ASSET_CACHE = "public, max-age=31536000, immutable"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gz: bytes
    etag: str
    media_type: str

    @property
    def version(self) -> str:
        """What the page's URL of this asset carries (`?v=`)."""
        return self.etag.strip('"')[:12]

    @classmethod
    def of(cls, body: bytes, suffix: str) -> "Asset":
        return cls(body, gzip.compress(body, compresslevel=9, mtime=0),
                   '"' + hashlib.sha256(body).hexdigest()[:32] + '"', _TYPES[suffix])


# URL path under /dashboard/ -> file. Only these are served (no path from a request reaches the
# file system).
_FILES = {
    "app.js": STATIC / "dashboard" / "app.js",
    "app.css": STATIC / "dashboard" / "app.css",
    "vendor/uplot/uPlot.iife.min.js": STATIC / "vendor" / "uplot" / "uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css": STATIC / "vendor" / "uplot" / "uPlot.min.css",
}
ASSETS = {name: Asset.of(path.read_bytes(), path.suffix) for name, path in _FILES.items()}


def offers() -> dict:
    """What the stats API offers, from the very types it validates `metrics` and `group_by`
    against (aggregation/query.py, derived from the catalog; /openapi.json shows the same enums).
    Written into the page, so the page needs no extra request (113 KB of /openapi.json, in series
    before every read) to know which tiles and panels it can fill; the page's ETag changes with it."""
    from .. import catalog
    from ..aggregation import query

    dimensions = list(typing.get_args(query.Dimension))
    filters = set(catalog.filter_names())
    # Visit metrics (kind "visit") group by the visits' own dimensions; the page asks them only
    # under filters a visit row carries (others are a raw read: seconds at millions of events).
    # The visit-only dimensions (entry/exit page) go with visit metrics only. The page asks each
    # kind separately and leaves out what a filter makes unanswerable (else one 422 for all).
    visit_metrics = [m.name for m in catalog.METRICS if m.kind == "visit"]
    return {"metrics": list(typing.get_args(query.Metric)), "dimensions": dimensions,
            "filters": {d.name: bool(getattr(d, "allow_empty", False))
                        for d in catalog.DIMENSIONS if d.name in filters and d.name in dimensions},
            "visit_metrics": visit_metrics,
            "visit_dimensions": list(getattr(catalog, "VISIT_DIMENSIONS", ())),
            "visit_only": list(getattr(catalog, "VISIT_ONLY_DIMENSIONS", ()))}


def _page() -> Asset:
    """index.html with each asset's URL versioned by its hash ({{name}} placeholders) and what
    the API offers ({{offers}})."""
    text = (STATIC / "dashboard" / "index.html").read_text()
    for name, asset in ASSETS.items():
        text = text.replace("{{" + name + "}}", f"/dashboard/{name}?v={asset.version}")
    text = text.replace("{{offers}}", html.escape(json.dumps(offers(), separators=(",", ":"))))
    return Asset.of(text.encode(), ".html")


PAGE = _page()

router = APIRouter()


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _serve(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("if-none-match", ""), asset.etag):
        return Response(status_code=304, headers=headers)
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(asset.gz, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


_NOT_MODIFIED = {304: {"description": "Not modified: If-None-Match holds the current ETag"}}


@router.get("/dashboard", tags=["dashboard"], response_class=Response,
            responses={200: {"description": "The dashboard page", "content": {
                "text/html": {"schema": {"type": "string"}}}}, **_NOT_MODIFIED})
async def dashboard(request: Request):
    """The dashboard: open it, enter a read key once (or open a share link)."""
    return _serve(request, PAGE, {**SECURITY_HEADERS, "Cache-Control": PAGE_CACHE})


# The page's own files, at the URLs the page names: not part of the API (not in /openapi.json).
@router.get("/dashboard/{name:path}", include_in_schema=False)
async def dashboard_asset(name: str, request: Request):
    asset = ASSETS.get(name)
    if asset is None:
        return Response(b'{"error":"not_found","detail":"no such dashboard asset"}', status_code=404,
                        media_type="application/json")
    # Immutable only at the URL of these very bytes: any other (no `v`, an old release's) is
    # revalidated, or a browser would keep an unversioned copy for a year across upgrades.
    cache = ASSET_CACHE if request.query_params.get("v") == asset.version else PAGE_CACHE
    return _serve(request, asset, {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


NO_DB_PATHS = {"/dashboard", *(f"/dashboard/{n}" for n in ASSETS)}
