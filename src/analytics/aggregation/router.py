"""GET /api/v1/stats/{timeseries,breakdown,totals}: typed parameters, JSON from the service."""
from __future__ import annotations

import inspect
import typing
from datetime import datetime
from typing import Annotated, List, Literal, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..web.errors import validation_error
from ..web.fastpath import fast
from .query import Dimension, Kind, Metric, StatsQuery, build_query

router = APIRouter()

class StatsParams:
    """The parameters shared by all three endpoints (FastAPI types and documents them)."""

    def __init__(
        self,
        interval: Annotated[Optional[str], Query(
            description="Bucket width (timeseries): '15 minutes', '1 day', '1 week', '1 month' or "
                        "minute/hour/day/week/month; 1 minute to 1 year. Default 1 day.")] = None,
        start: Annotated[Optional[datetime], Query(
            description="ISO 8601 instant, inclusive; without an offset it is wall time in `timezone`. "
                        "Default: end - 30 days.")] = None,
        end: Annotated[Optional[datetime], Query(
            description="ISO 8601 instant, exclusive. Default: now, rounded up to the quarter hour.")] = None,
        timezone: Annotated[str, Query(description="IANA zone for bucket edges and output offsets")] = "UTC",
        group_by: Annotated[List[Dimension], Query(description="Repeatable")] = [],  # noqa: B006
        metrics: Annotated[List[Metric], Query(description="Repeatable; default events")] = [],  # noqa: B006
        page: Annotated[List[str], Query(description="Exact page; repeatable (OR)")] = [],  # noqa: B006
        page_prefix: Annotated[List[str], Query(description="Page prefix; repeatable (OR)")] = [],  # noqa: B006
        os: Annotated[List[str], Query(description="Windows, MacOS, iOS, Android, Linux, ChromeOS, Other")] = [],  # noqa: B006
        browser: Annotated[List[str], Query(description="Browser family; repeatable (OR)")] = [],  # noqa: B006
        device: Annotated[List[str], Query(description="desktop, mobile, tablet, bot, other")] = [],  # noqa: B006
        referrer: Annotated[List[str], Query(description="Referrer host without www. ('' = direct)")] = [],  # noqa: B006
        include_bots: Annotated[bool, Query(description="Count bot traffic too")] = False,
        order_by: Annotated[Optional[str], Query(
            description="A requested metric, optionally ':asc' or ':desc' (default desc); "
                        "default the first metric")] = None,
        limit: Annotated[Optional[int], Query(ge=1, le=10000, description="Groups per page "
                                              "(breakdown default 10; elsewhere all groups)")] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000, description="Groups to skip")] = 0,
        compare: Annotated[Optional[Literal["previous"]], Query(
            description="totals: also the period of the same length just before")] = None,
        source: Annotated[Literal["auto", "raw"], Query(include_in_schema=False)] = "auto",
    ) -> None:
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})


_SIGNATURE = inspect.signature(StatsParams)
_ALLOWED = set(_SIGNATURE.parameters)


async def stats_params(**values) -> StatsParams:
    """StatsParams as an async FastAPI dependency (a class dependency runs in the thread pool)."""
    return StatsParams(**values)


stats_params.__signature__ = _SIGNATURE  # type: ignore[attr-defined]

# The same parameters, validated at run time by one pydantic model (types, constraints and
# error messages are pydantic's, as through FastAPI): FastAPI's per-parameter extraction
# re-inspects every annotation on every request, ~0.9 ms for these 17 (a quarter of a worker's
# CPU on a 5 ms dashboard answer).
_HINTS = typing.get_type_hints(StatsParams.__init__, include_extras=True)
_MODEL = create_model("StatsParamsModel", **{n: (_HINTS[n], p.default) for n, p in _SIGNATURE.parameters.items()})
_LISTS = frozenset(n for n in _SIGNATURE.parameters if typing.get_origin(typing.get_args(_HINTS[n])[0]) is list)


def parse_params(request: Request) -> StatsParams:
    qp = request.query_params
    data = {}
    for name in qp.keys():
        if name in _LISTS:
            data[name] = qp.getlist(name)
        elif name in _ALLOWED:
            data[name] = qp[name]  # the last value, as FastAPI takes it
    try:
        m = _MODEL.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None
    return StatsParams(**{n: getattr(m, n) for n in _SIGNATURE.parameters})


def _query(kind: Kind, request: Request, p: StatsParams) -> StatsQuery:
    settings = request.app.state.settings
    for name in request.query_params.keys():
        if name not in _ALLOWED and not name.startswith("_"):
            raise validation_error(name, "unknown parameter")
    if "source" in request.query_params and not settings.stats_allow_raw_source:
        # An operator's knob (STATS_ALLOW_RAW_SOURCE), not a public one: raw scans are costly.
        raise validation_error("source", "unknown parameter")
    return build_query(
        kind, interval=p.interval, start=p.start, end=p.end, timezone_name=p.timezone,
        group_by=list(p.group_by), metrics=list(p.metrics),
        filters={"page": p.page, "page_prefix": p.page_prefix, "os": p.os, "browser": p.browser,
                 "device": p.device, "referrer": p.referrer},
        include_bots=p.include_bots, order_by=p.order_by, limit=p.limit, offset=p.offset,
        compare=p.compare, source=p.source, max_buckets=settings.stats_max_buckets)


# -- response shapes (for the OpenAPI schema; the service renders JSON itself) ------------------
class StatsRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    bucket: Optional[str] = None
    page: Optional[str] = None
    os: Optional[str] = None
    browser: Optional[str] = None
    device: Optional[str] = None
    referrer: Optional[str] = None
    events: Optional[int] = None
    unique_sessions: Optional[int] = None
    avg_duration: Optional[float] = None
    median_duration: Optional[float] = None
    p95_duration: Optional[float] = None
    previous: Optional[dict] = None


class StatsMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    interval: Optional[str]
    timezone: str
    start: str
    end: str
    group_by: List[str]
    metrics: List[str]
    filters: dict
    source: str
    sources: dict
    buckets: Optional[int] = None
    total_groups: Optional[int] = None
    order_by: Optional[str] = None
    limit: Optional[int] = None
    offset: Optional[int] = None


class StatsResponse(BaseModel):
    meta: StatsMeta
    results: List[StatsRow]


_DOC = {"response_model": None, "responses": {
    200: {"model": StatsResponse},
    422: {"description": "A parameter is invalid (named in detail.loc)"},
    503: {"description": "The question is too expensive (READ_STATEMENT_TIMEOUT_MS), too many reads are "
                         "running, or the database is unavailable; see Retry-After"}}}


async def _respond(kind: Kind, request: Request, p: StatsParams) -> Response:
    q = _query(kind, request, p)
    ans = await request.app.state.stats.answer(q)
    return Response(ans.body, media_type="application/json",
                    headers={"X-Cache": ans.how})


def _fast(kind: Kind):
    """The fast path's handler: the same parameters, parsed by the model built from StatsParams."""
    async def handler(request: Request) -> Response:
        return await _respond(kind, request, parse_params(request))
    return fast(handler, parses=(stats_params,))


# The endpoints, declared once: typed parameters (the OpenAPI schema, and what FastAPI validates
# when it serves them), dependencies, responses. GET requests are answered by the fast path
# (web/fastpath.py) from this declaration.
@router.get("/timeseries", **_DOC, summary="One row per bucket (and group), zero-filled")
@_fast("timeseries")
async def timeseries(request: Request, p: Annotated[StatsParams, Depends(stats_params)]):
    return await _respond("timeseries", request, p)


@router.get("/breakdown", **_DOC, summary="One row per group over the range, ordered and paged")
@_fast("breakdown")
async def breakdown(request: Request, p: Annotated[StatsParams, Depends(stats_params)]):
    return await _respond("breakdown", request, p)


@router.get("/totals", **_DOC, summary="The metrics over the range (optionally vs the previous period)")
@_fast("totals")
async def totals(request: Request, p: Annotated[StatsParams, Depends(stats_params)]):
    return await _respond("totals", request, p)
