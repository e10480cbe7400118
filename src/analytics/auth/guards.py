"""Access guards: `@guard` dependencies (web/fastpath.py) that both the FastAPI path and the fast
path run, declared once per route.

STUBS until the keys work lands: each lets everything through. Routes already depend on them,
so that the policy is filled in here and nowhere else.
"""
from __future__ import annotations

from starlette.requests import Request

from ..web.fastpath import guard


@guard
async def require_read(request: Request) -> None:
    """Reads: a `read` key or token (unless PUBLIC_READS)."""


@guard
async def require_admin(request: Request) -> None:
    """Operator routes (/metrics, readiness details, key management): an `admin` key."""


@guard
async def ingest_access(request: Request) -> None:
    """Ingest: open to browsers, optionally INGEST_ALLOWED_HOSTS / INGEST_KEY_REQUIRED; a key, if
    sent, sets the principal (an `ingest` key may report `ip_address`)."""
