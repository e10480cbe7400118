"""Seed 004's read endpoints, unchanged in shape: GET /api/events/ and GET /api/events/{id}/."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, List, Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from psycopg.rows import dict_row
from sqlmodel import SQLModel

from ..auth.guards import require_read
from ..db import connection
from ..ingestion.schemas import EventModel
from ..web.errors import validation_error
from ..web.ratelimit import RESPONSE_429, limit_read
from ..web.rules import rules_422
from .intervals import IntervalError, parse_bounded
from .params import IntervalText, Text

# Seed 004's reads need a `read` key or token (auth/guards.py), unless PUBLIC_READS.
router = APIRouter(dependencies=[Depends(require_read)])

DEFAULT_LOOKUP_PAGES = [
    "/", "/about", "/pricing", "/contact",
    "/blog", "/products", "/login", "/register",
    "/services", "/support", "/dashboard", "/settings",
]
MAX_PAGES = 100


class EventBucketSchema(SQLModel):
    bucket: datetime
    page: str
    operating_system: Optional[str] = ""
    avg_duration: Optional[float] = 0.0
    count: int


@router.get("/", response_model=List[EventBucketSchema], dependencies=[Depends(limit_read)], responses={
    429: RESPONSE_429,
    422: rules_422("interval_bounds", "too_many_rows", "unknown_parameter", "retention_horizon",
                   description="A parameter is invalid (named in detail.loc), or the answer would be over "
                               "SEED_MAX_ROWS rows (`duration`: ask for a coarser one or fewer pages)"),
    503: {"description": "The question is too expensive (READ_STATEMENT_TIMEOUT_MS), too many reads are "
                         "running, or the database is unavailable; see Retry-After"}})
async def read_events(
    request: Request,
    duration: Annotated[IntervalText, Query(
        description="Bucket width, e.g. '1 hour', '1 day', '1 week'; 1 minute to 1 year")] = "1 day",
    pages: Annotated[List[Text], Query(
        max_length=MAX_PAGES, description="Pages to include; repeatable (default: seed 004's twelve)")] = [],  # noqa: B006
    source: Literal["auto", "raw"] = Query(default="auto", include_in_schema=False),
):
    if "source" in request.query_params and not request.app.state.settings.stats_allow_raw_source:
        # An operator's knob (STATS_ALLOW_RAW_SOURCE)
        raise validation_error("source", "unknown parameter", rule="unknown_parameter")
    try:
        interval = parse_bounded(duration)
    except IntervalError as exc:
        raise validation_error("duration", f"duration {exc}", rule=exc.rule) from None
    lookup = pages if pages else DEFAULT_LOOKUP_PAGES
    if len(lookup) > MAX_PAGES:
        raise validation_error("pages", f"at most {MAX_PAGES} pages")
    if any(len(p) > 2048 for p in lookup):
        raise validation_error("pages", "a page is longer than 2048 characters")
    if any("\x00" in p for p in lookup):
        raise validation_error("pages", "a page must not contain NUL characters")
    # The bytes FastAPI would send for List[EventBucketSchema], written by PostgreSQL.
    body, served_by = await request.app.state.seed_reader.answer(interval, lookup, force_raw=source == "raw")
    # The body is seed 004's list, unchanged: which server answered goes in a header.
    return Response(body, media_type="application/json", headers={"X-Served-By": served_by.name})


@router.get("/{event_id}/", response_model=EventModel, dependencies=[Depends(limit_read)], responses={
    429: RESPONSE_429,
    404: {"description": "No event has this id"},
    503: {"description": "The database is unavailable or busy; see Retry-After"}})
async def get_event_by_id(event_id: uuid.UUID, request: Request):
    async with connection(request.app.state.pool) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, time, page, ip_address, user_agent, referrer, session_id, duration, "
            "description, os, browser, device, is_bot, name, props, hostname, utm_source, utm_medium, "
            "utm_campaign, country FROM events WHERE id = %s "
            "ORDER BY time LIMIT 1", (event_id,))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(status_code=404, detail=f"Event with id: {event_id} not found.")
    return row
