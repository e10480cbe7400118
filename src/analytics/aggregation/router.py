"""GET /api/v1/stats/{timeseries,breakdown,totals}: typed parameters, JSON from the service."""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Callable, List, Literal, Optional

from cachetools import LRUCache

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..auth.guards import require_stats_read
from ..web.errors import validation_error
from ..web.fastpath import fast
from ..web.ratelimit import RESPONSE_429, limit_read
from ..web.rules import rules_422
from .. import catalog
from .params import (GROUP_BY_DOC, MAX_GROUP_BY, MAX_VALUES, GroupName, Instant, IntervalText, NonEmptyText, OrderBy, PropFilter,
                     ZoneName, filter_type)
from .query import Kind, Metric, StatsQuery, default_end, build_query

# Every stats read needs a `read` key or token, or a dashboard share link's (auth/guards.py),
# on both paths.
router = APIRouter(dependencies=[Depends(require_stats_read)])

def _declared(
    *,
    interval: Annotated[Optional[IntervalText], Query(
        description="Bucket width (timeseries): '15 minutes', '1 day', '1 week', '1 month' or "
                    "minute/hour/day/week/month; 1 minute to 1 year. Default 1 day.")] = None,
    start: Annotated[Optional[Instant], Query(
        description="ISO 8601 date or date and time, inclusive; without an offset it is wall time in "
                    "`timezone`. Default: end - 30 days.")] = None,
    end: Annotated[Optional[Instant], Query(
        description="ISO 8601, exclusive. Default: now, rounded up to the quarter hour.")] = None,
    timezone: Annotated[ZoneName, Query(description="IANA zone for bucket edges and output offsets")] = "UTC",
    group_by: Annotated[List[GroupName], Query(max_length=MAX_GROUP_BY, description=GROUP_BY_DOC)] = [],  # noqa: B006
    metrics: Annotated[List[Metric], Query(description="Repeatable; default events")] = [],  # noqa: B006
    include_bots: Annotated[bool, Query(description="Count bot traffic too")] = False,
    order_by: Annotated[Optional[OrderBy], Query(description="A requested metric, optionally ':asc' or ':desc' (default "
                                           "desc); default the first metric")] = None,
    limit: Annotated[Optional[int], Query(ge=1, le=10000, description="Groups per page (with group_by; "
                                          "breakdown default 10)")] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Groups to skip (with group_by)")] = 0,
    compare: Annotated[Optional[Literal["previous"]], Query(
        description="Also the period of the same length just before")] = None,
    source: Annotated[Literal["auto", "raw"], Query(include_in_schema=False)] = "auto",
) -> None:
    """The parameters of the stats endpoints, declared once; each endpoint takes a variant.
    The filter parameters (one per dimension of the catalog) are inserted after `metrics`."""


def _filter_parameters() -> dict[str, inspect.Parameter]:
    """One repeatable parameter per filter of the catalog, typed as the catalog says."""
    out = {}
    for d in catalog.DIMENSIONS:
        for name in d.filters:
            prefix = name != d.name
            kind = NonEmptyText if prefix else filter_type(d)
            desc = d.prefix_filter if prefix else d.description
            out[name] = inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=[],
                annotation=Annotated[List[kind], Query(max_length=MAX_VALUES, description=desc)])  # type: ignore[valid-type]
    # issue 11 part 1: custom properties (raw events)
    out[catalog.PROP_FILTER] = inspect.Parameter(
        catalog.PROP_FILTER, inspect.Parameter.KEYWORD_ONLY, default=[],
        annotation=Annotated[List[PropFilter], Query(max_length=MAX_VALUES, description=(
            "A custom property's value, `<key>:<value>` (the key ends at the first ':'; an empty value "
            "matches events without the key); repeatable: values of one key OR-ed, keys AND-ed. "
            "Answered from raw events"))])
    return out


def _base() -> dict[str, inspect.Parameter]:
    hints = typing.get_type_hints(_declared, include_extras=True)
    out = {}
    for n, p in inspect.signature(_declared).parameters.items():
        out[n] = p.replace(annotation=hints[n])
        if n == "metrics":
            out.update(_filter_parameters())
    return out


_BASE = _base()


def parameters(*names: str) -> list[inspect.Parameter]:
    """Some of the declared parameters, for another read route that takes them with the same
    meaning, schema and checks (GET /api/v1/events/export: the range and the filters)."""
    return [_BASE[n] for n in names]


class StatsParams:
    """The validated parameters of one request (absent ones at their declared defaults)."""

    def __init__(self, **values) -> None:
        self.__dict__.update({n: p.default for n, p in _BASE.items()})
        self.__dict__.update(values)


@dataclass(frozen=True)
class _Declaration:
    """One endpoint's parameters: the FastAPI dependency (schema, and validation when FastAPI
    serves the route) and the same signature as one pydantic model (the fast path)."""

    dependency: Callable
    model: type[BaseModel]
    lists: frozenset[str]
    allowed: frozenset[str]


def _declaration(kind: Kind) -> _Declaration:
    params = dict(_BASE)
    if kind != "totals":
        del params["compare"]
    if kind == "breakdown":
        params["group_by"] = params["group_by"].replace(
            annotation=Annotated[List[GroupName], Query(min_length=1, max_length=MAX_GROUP_BY,
                                                        description=GROUP_BY_DOC + "; at least one")],
            default=inspect.Parameter.empty)

    async def dependency(**values) -> StatsParams:
        return StatsParams(**values)

    dependency.__signature__ = inspect.Signature(list(params.values()))  # type: ignore[attr-defined]
    dependency.__name__ = f"{kind}_params"
    # FastAPI's per-parameter extraction re-inspects every annotation on every request, ~0.9 ms
    # for these 17 (a quarter of a worker's CPU on a 5 ms dashboard answer): the fast path
    # validates them with one model of the same annotations (same types, constraints, errors).
    model = create_model(f"{kind.title()}Params", **{
        n: (p.annotation, ... if p.default is inspect.Parameter.empty else p.default) for n, p in params.items()})
    lists = frozenset(n for n, p in params.items() if _is_list(p.annotation))
    return _Declaration(dependency, model, lists, frozenset(params))


def _is_list(annotation) -> bool:
    inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    return typing.get_origin(inner) is list


DECLARATIONS: dict[str, _Declaration] = {k: _declaration(k) for k in ("timeseries", "breakdown", "totals")}


def parse_params(kind: Kind, request: Request) -> StatsParams:
    d = DECLARATIONS[kind]
    qp = request.query_params
    data = {}
    for name in qp.keys():
        if name in d.lists:
            data[name] = qp.getlist(name)
        elif name in d.allowed:
            data[name] = qp[name]  # the last value, as FastAPI takes it
    try:
        m = d.model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None
    return StatsParams(**{n: getattr(m, n) for n in d.allowed})


def _query(kind: Kind, request: Request, p: StatsParams) -> StatsQuery:
    settings = request.app.state.settings
    allowed = DECLARATIONS[kind].allowed
    for name in request.query_params.keys():
        if name not in allowed and not name.startswith("_"):
            raise validation_error(name, "unknown parameter", rule="unknown_parameter")
    if "source" in request.query_params and not settings.stats_allow_raw_source:
        # An operator's knob (STATS_ALLOW_RAW_SOURCE), not a public one: raw scans are costly.
        raise validation_error("source", "unknown parameter", rule="unknown_parameter")
    return build_query(
        kind, interval=p.interval, start=p.start, end=p.end, timezone_name=p.timezone,
        group_by=list(p.group_by), metrics=list(p.metrics),
        filters={f: getattr(p, f) for f in (*catalog.filter_names(), catalog.PROP_FILTER)},
        include_bots=p.include_bots, order_by=p.order_by, limit=p.limit, offset=p.offset,
        compare=p.compare, source=p.source, max_buckets=settings.stats_max_buckets)


# -- response shapes (for the OpenAPI schema; the service renders JSON itself) ------------------
# One optional field per dimension and metric of the catalog.
StatsRow = create_model(
    "StatsRow", __config__=ConfigDict(extra="allow"),
    bucket=(Optional[str], None),
    **{d.name: (Optional[str], None) for d in catalog.DIMENSIONS},
    **{m.name: (Optional[m.json_type], None) for m in catalog.METRICS},  # type: ignore[name-defined]
    previous=(Optional[dict], None))


class StatsMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    served_by: str = Field(description="The server that computed the answer: 'primary', or 'replica-N' "
                                       "(the Nth of DATABASE_READ_URLS)")
    replay_lag_seconds: float = Field(description="That replica's replay lag at its last health check; 0 "
                                                  "on the primary")
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
    unique_visitors: Optional[str] = None  # what the metric means (service.VISITORS_NOTE)
    raw_horizon: Optional[str] = Field(None, description="Raw events before this instant were dropped "
                                                         "(RETENTION_DAYS); null: none were")
    rollup_horizon: Optional[str] = Field(None, description="Nothing is kept before this instant "
                                                            "(ROLLUP_RETENTION_DAYS); null: all is")


class StatsResponse(BaseModel):
    meta: StatsMeta
    results: List[StatsRow]


# Rules every stats endpoint enforces beyond what the schema states (web/rules.py).
_RULES = ("calendar_date", "date_range", "range_order", "interval_bounds", "needs_group_by",
          "requested_metric", "unknown_parameter", "retention_horizon", "visit_dimension",
          "prop_value")


def _doc(*rules: str) -> dict:
    return {"response_model": None, "responses": {
        200: {"model": StatsResponse},
        429: RESPONSE_429,
        422: rules_422(*dict.fromkeys(_RULES + rules),
                       description="A parameter is invalid (named in detail.loc)"),
        503: {"description": "The question is too expensive (READ_STATEMENT_TIMEOUT_MS), too many reads "
                             "are running, or the database is unavailable; see Retry-After"}}}


async def _answer(request: Request, q: StatsQuery) -> Response:
    ans = await request.app.state.stats.answer(q)
    return Response(ans.body, media_type="application/json", headers={"X-Cache": ans.how})


async def _respond(kind: Kind, request: Request, p: StatsParams) -> Response:
    return await _answer(request, _query(kind, request, p))


# Questions the fast path parsed, by their query string. Dashboards ask the same questions again
# and again (every viewer, every refresh), and parsing one (the declaration's model, the catalog's
# checks, the query model) was about a quarter of a read's CPU in the worker (py-spy, GET
# /totals), paid on answer-cache hits too. A StatsQuery depends on the query string and, for a
# range left open, on the default end (the next quarter hour), so both make the key. Only
# questions that parsed cleanly are kept; at most 256 query strings of at most 2 KB each.
_PARSED: LRUCache = LRUCache(maxsize=256)
_PARSED_MAX_QUERY = 2048


def _parsed(kind: Kind, request: Request) -> StatsQuery:
    qs = request.scope.get("query_string", b"")
    if len(qs) > _PARSED_MAX_QUERY:
        return _query(kind, request, parse_params(kind, request))
    key = (kind, qs, default_end(datetime.now(timezone.utc)))
    q = _PARSED.get(key)
    if q is None:
        q = _PARSED[key] = _query(kind, request, parse_params(kind, request))
    return q


def _fast(kind: Kind):
    """The fast path's handler: the endpoint's parameters, parsed by its declaration's model (or
    found parsed already)."""
    async def handler(request: Request) -> Response:
        return await _answer(request, _parsed(kind, request))
    return fast(handler, parses=(DECLARATIONS[kind].dependency,))


# The endpoints, declared once: typed parameters (the OpenAPI schema, and what FastAPI validates
# when it serves them), dependencies, responses. GET requests are answered by the fast path
# (web/fastpath.py) from this declaration.
@router.get("/timeseries", **_doc("interval_bounds", "too_many_buckets", "too_many_rows"),
            dependencies=[Depends(limit_read)],
            summary="One row per bucket (and group), zero-filled")
@_fast("timeseries")
async def timeseries(request: Request,
                     p: Annotated[StatsParams, Depends(DECLARATIONS["timeseries"].dependency)]):
    return await _respond("timeseries", request, p)


@router.get("/breakdown", **_doc(), dependencies=[Depends(limit_read)],
            summary="One row per group over the range, ordered and paged")
@_fast("breakdown")
async def breakdown(request: Request,
                    p: Annotated[StatsParams, Depends(DECLARATIONS["breakdown"].dependency)]):
    return await _respond("breakdown", request, p)


@router.get("/totals", **_doc(), dependencies=[Depends(limit_read)],
            summary="The metrics over the range (optionally vs the previous period)")
@_fast("totals")
async def totals(request: Request, p: Annotated[StatsParams, Depends(DECLARATIONS["totals"].dependency)]):
    return await _respond("totals", request, p)
