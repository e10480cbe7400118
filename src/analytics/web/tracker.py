"""GET /js/tracker.js: the tracker script (static/tracker.min.js, built from tracker.src.js by
`make tracker`), read once at import.

Cached for a long time by browsers and CDNs, revalidated by its ETag (a hash of its bytes, so a
new release is a new tag): `If-None-Match` with it answers 304 and no body. Sent gzipped to
clients that accept it (precompressed once: the budget is 1,024 bytes gzipped)."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

STATIC = Path(__file__).resolve().parent / "static"
SCRIPT = (STATIC / "tracker.min.js").read_bytes()
SCRIPT_GZ = gzip.compress(SCRIPT, compresslevel=9, mtime=0)
ETAG = '"' + hashlib.sha256(SCRIPT).hexdigest()[:32] + '"'
# A day fresh, then a week served stale while the cache revalidates: installs pick up a new
# release within a day, and revalidation is a 304 of a few bytes.
CACHE_CONTROL = "public, max-age=86400, stale-while-revalidate=604800"
MEDIA_TYPE = "text/javascript; charset=utf-8"

router = APIRouter()


def _matches(if_none_match: str) -> bool:
    """RFC 9110 weak comparison against our tag; `*` matches."""
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == ETAG for t in tags)


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@router.get("/js/tracker.js", include_in_schema=True, tags=["tracker"],
            response_class=Response,
            responses={200: {"description": "The tracker script", "content": {
                           "text/javascript": {"schema": {"type": "string"}}}},
                       304: {"description": "Not modified: If-None-Match holds the current ETag"}})
async def tracker_js(request: Request):
    """The tracker. Install with `<script defer src="https://HOST/js/tracker.js"></script>`."""
    headers = {"ETag": ETAG, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(SCRIPT_GZ, media_type=MEDIA_TYPE, headers={**headers, "Content-Encoding": "gzip"})
    return Response(SCRIPT, media_type=MEDIA_TYPE, headers=headers)
