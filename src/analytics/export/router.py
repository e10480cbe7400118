"""GET /api/v1/events/export: the raw events of a range, streamed as NDJSON or CSV.

The range and filter parameters are the stats API's own declarations (aggregation/router.py),
checked by the same query model, so they mean and refuse the same things. An export may run for
minutes, so it is not held to READ_STATEMENT_TIMEOUT_MS; it is bounded instead by
EXPORT_CONCURRENCY (exports at once per worker: each holds one read connection and one database
core; the next is a 503 `exports_busy` at once) and EXPORT_MAX_SECONDS (the statement's own
time limit). The other reads keep DB_READ_POOL_SIZE - EXPORT_CONCURRENCY connections.
"""
from __future__ import annotations

import inspect
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .. import catalog
from ..aggregation.query import build_query
from ..aggregation.router import StatsParams, parameters
from ..auth.guards import require_read
from ..web.ratelimit import RESPONSE_429, limit_read
from ..web.errors import validation_error
from ..web.rules import rules_422
from .ndjson import encoder_for
from .statement import FIELDS, Format, copy_statement
from .stream import ExportResponse, ExportStream

router = APIRouter()

_SHARED = ("start", "end", "timezone", *catalog.event_filter_names(), "include_bots")
MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


def _params() -> list[inspect.Parameter]:
    shared = {p.name: p for p in parameters(*_SHARED)}
    # An export is the stored data: bots included unless asked otherwise (the stats API counts
    # people by default). Same parameter, same checks, another default.
    shared["include_bots"] = shared["include_bots"].replace(
        default=True, annotation=Annotated[bool, Query(description="Include bot traffic (default true)")])
    fmt = inspect.Parameter("format", inspect.Parameter.KEYWORD_ONLY, default="ndjson",
                            annotation=Annotated[Literal["ndjson", "csv"], Query(
                                description="ndjson: one JSON object per line; csv: RFC 4180 with a "
                                            "header line")])
    return [fmt, *shared.values()]


_PARAMS = _params()
_ALLOWED = frozenset(p.name for p in _PARAMS)


async def export_params(**values) -> StatsParams:
    return StatsParams(**values)


export_params.__signature__ = inspect.Signature(_PARAMS)  # type: ignore[attr-defined]


class ExportGate:
    """Exports running in this worker; past the cap, a refusal (not a wait: an export is long)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.running = 0

    def enter(self) -> bool:
        if self.running >= self.limit:
            return False
        self.running += 1
        return True

    def leave(self) -> None:
        self.running -= 1


def _gate(request: Request) -> ExportGate:
    state = request.app.state
    gate = getattr(state, "export_gate", None)
    if gate is None:
        gate = state.export_gate = ExportGate(state.settings.export_concurrency)
    return gate


def _busy(limit: int) -> JSONResponse:
    return JSONResponse({"error": "exports_busy",
                         "detail": f"{limit} exports are already running in this worker "
                                   "(EXPORT_CONCURRENCY); retry shortly."},
                        status_code=503, headers={"Retry-After": "5"})


def wants_gzip(accept_encoding: str) -> bool:
    """The client lists gzip in Accept-Encoding, with a q-value above 0."""
    for item in accept_encoding.split(","):
        name, _, rest = item.partition(";")
        if name.strip().lower() != "gzip":
            continue
        q = rest.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


@router.get(
    "/export", response_class=StreamingResponse,
    dependencies=[Depends(require_read), Depends(limit_read)],  # an export costs one read request
    summary="Stream the events of a range as NDJSON or CSV",
    responses={
        200: {"description": "The events in (time, id) order: " + ", ".join(FIELDS) + ". Streamed "
                             "(chunked); gzip when Accept-Encoding allows it. A transfer that ends "
                             "without its final chunk is a failed export, not a short one.",
              "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                          "text/csv": {"schema": {"type": "string"}}}},
        401: {"description": "No valid key or token (reads need the `read` scope)"},
        403: {"description": "The key lacks the `read` scope"},
        429: RESPONSE_429,
        422: rules_422("calendar_date", "date_range", "range_order", "unknown_parameter",
                       description="A parameter is invalid (named in detail.loc)"),
        503: {"description": "EXPORT_CONCURRENCY exports are already running in this worker "
                             "(`exports_busy`), or the database is unavailable; see Retry-After"}})
async def export_events(request: Request, p: Annotated[StatsParams, Depends(export_params)]):
    """The raw events of `start` … `end` (end exclusive; default the last 30 days) that match the
    filters, as stored; `format` ndjson (default) or csv."""
    for name in request.query_params.keys():
        if name not in _ALLOWED and not name.startswith("_"):
            raise validation_error(name, "unknown parameter", rule="unknown_parameter")
    settings = request.app.state.settings
    q = build_query("totals", interval=None, start=p.start, end=p.end, timezone_name=p.timezone,
                    group_by=[], metrics=[], filters={f: getattr(p, f) for f in catalog.event_filter_names()},
                    include_bots=p.include_bots, order_by=None, limit=None, offset=0, compare=None,
                    source="auto", max_buckets=settings.stats_max_buckets)
    fmt: Format = p.format
    statement, values = copy_statement(q, fmt)
    gate = _gate(request)
    if not gate.enter():
        return _busy(gate.limit)
    gzip = wants_gzip(request.headers.get("accept-encoding", ""))
    stream = ExportStream(request.app.state.reads, statement, values, gzip=gzip,
                          timeout_ms=int(settings.export_max_seconds * 1000), on_close=gate.leave,
                          encode=encoder_for(fmt))
    await stream.start()  # errors before the first byte are answered as errors (503, ...)
    headers = {"Content-Disposition": f'attachment; filename="events-{_stamp(q.start)}-{_stamp(q.end)}.{fmt}"',
               "Cache-Control": "no-store", "Vary": "Accept-Encoding",
               "X-Accel-Buffering": "no"}  # proxies: pass the stream on as it comes
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return ExportResponse(stream, media_type=MEDIA_TYPES[fmt], headers=headers)
