"""POST /api/events/ and /api/events/batch: validate, enrich, hand to the group-commit writer,
answer after COMMIT."""
from __future__ import annotations

import asyncio
import json
from datetime import timezone

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..auth.guards import ingest_access
from ..db import CommitOutcomeUnknown, DatabaseUnavailable
from ..web import metrics
from ..privacy.visitor import Sender, sender
from ..web.errors import outcome_unknown_response, unavailable_response
from ..web.fastpath import fast
from ..web.ratelimit import RESPONSE_429, limit_batch, limit_event
from ..web.rules import rules_422

from . import bodies
from .schemas import BatchResult, EventCreateSchema, EventModel
from .writer import EventRejected, WriterOverloaded, WriterStopped

# Open to browsers; INGEST_ALLOWED_HOSTS / INGEST_KEY_REQUIRED (auth/guards.py), on both paths.
router = APIRouter(dependencies=[Depends(ingest_access)])

# Batch bodies from this size on are validated and enriched in a worker thread: up to
# BATCH_MAX_EVENTS events (and their user agents, on a cache miss) can take more of the event
# loop than any other request should wait. Below it (and for single events, the hot path) the
# hop to a thread costs more than the work. One such thread per worker at a time: the work
# holds the GIL anyway, and every thread that wants it lengthens the loop's wait for it.
OFF_LOOP_MIN_BYTES = 16 * 1024


async def _off_loop(state, fn, *args):
    slot = getattr(state, "off_loop_slot", None)
    if slot is None:
        slot = state.off_loop_slot = asyncio.Semaphore(1)
    async with slot:
        return await asyncio.to_thread(fn, *args)


def _event_json(r, duplicate: bool) -> bytes:
    return json.dumps({
        # In UTC, as it is stored and read back (a client's offset was echoed before).
        "id": str(r.id), "time": r.time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"), "page": r.page,
        "ip_address": r.ip_address, "user_agent": r.user_agent, "referrer": r.referrer,
        "session_id": r.session_id, "duration": r.duration, "description": r.description,
        "os": r.os, "browser": r.browser, "device": r.device, "is_bot": r.is_bot,
        "name": r.name, "props": json.loads(r.props) if r.props else None, "hostname": r.hostname,
        "utm_source": r.utm_source, "utm_medium": r.utm_medium, "utm_campaign": r.utm_campaign,
        "country": r.country, "duplicate": duplicate,
    }).encode()


def overloaded_response() -> Response:
    return Response(b'{"error":"overloaded","detail":"Too many events in flight; retry shortly."}',
                    status_code=503, media_type="application/json", headers={"Retry-After": "1"})


_EVENT_SCHEMA = EventCreateSchema.model_json_schema()
# minItems/maxItems of the batch body; create_app states BATCH_MAX_EVENTS (document_batch_limit).
_BATCH_SCHEMA: dict = {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1}
# What the event body schema cannot state (web/rules.py).
_EVENT_RULES = ("time_window", "calendar_date", "too_many_bytes", "json_too_deep", "database_limit",
                "page_url", "prop_value")


# The tracker posts its JSON as text/plain (navigator.sendBeacon / fetch with a string body): a
# "simple" cross-origin request, with no CORS preflight. The body is read as JSON whatever its
# Content-Type (only NDJSON's types change how a batch is read), so this is documentation.
def _as_text(schema: dict) -> dict:
    return {"schema": {"type": "string", "contentMediaType": "application/json", "contentSchema": schema,
                       "description": "The same JSON as application/json, sent as text/plain by "
                                      "browsers (no CORS preflight)"}}


def document_batch_limit(max_events: int) -> None:
    """State BATCH_MAX_EVENTS in the batch body's schema (a setting, known once the app is made)."""
    _BATCH_SCHEMA["maxItems"] = max_events


async def _submit(state, records, endpoint: str) -> list[bool]:
    """writer.submit, counted in the metrics (events accepted, stored, duplicate; refusals by
    reason). Raises what submit raises."""
    metrics.accepted(endpoint, len(records))
    try:
        flags = await state.writer.submit(records)
    except (WriterOverloaded, WriterStopped):
        metrics.refused(endpoint, "overloaded")
        raise
    except CommitOutcomeUnknown:
        metrics.refused(endpoint, "write_timeout")
        raise
    except DatabaseUnavailable:
        metrics.refused(endpoint, "unavailable")
        raise
    except EventRejected:
        metrics.refused(endpoint, "database_limit")
        raise
    metrics.written(endpoint, flags)
    return flags


def _rejected(exc: bodies.BodyRejected, endpoint: str) -> JSONResponse:
    if exc.status != 413:  # 413s are counted from the status, wherever they were refused
        metrics.refused(endpoint, "validation")
    return JSONResponse({"error": exc.error, "detail": exc.errors}, status_code=exc.status)


def _refused_by_database(exc: EventRejected, batch: bool) -> JSONResponse:
    """422 for events the database refused (validation missed them): the field, and for a batch
    the item; in our words, never the database's."""
    detail = []
    for index, field, msg in exc.items:
        loc = ["body"] + ([index] if batch and index >= 0 else []) + ([field] if field else [])
        detail.append({"loc": loc, "msg": msg, "type": "database_limit"})
    return JSONResponse({"error": "validation_error", "detail": detail}, status_code=422)


async def _sender(request: Request) -> Sender:
    """The request's client address, site and today's salt (cached per worker: no database
    round trip unless the worker has no salt yet). Raises DatabaseUnavailable."""
    state = request.app.state
    salts = state.salts
    salt = salts.cached() or await salts.current()
    return sender(request.scope, state.trusted_networks, salt, state.settings.store_ip)


async def single_event(request: Request) -> Response:
    """Validate, enrich, write (group commit) and answer one event."""
    state = request.app.state
    try:
        who = await _sender(request)
    except DatabaseUnavailable:
        return unavailable_response()
    try:
        record = bodies.parse_event(await request.body(), state.enricher, who)
    except bodies.BodyRejected as exc:
        return _rejected(exc, "single")
    try:
        (new,) = await _submit(state, [record], "single")
    except (WriterOverloaded, WriterStopped):
        return overloaded_response()
    except CommitOutcomeUnknown:
        return outcome_unknown_response(state.settings.write_timeout_s)
    except DatabaseUnavailable:
        return unavailable_response()
    except EventRejected as exc:
        return _refused_by_database(exc, batch=False)
    return Response(_event_json(record, not new), status_code=201 if new else 200,
                    media_type="application/json")


@router.post("/", response_model=EventModel, status_code=201,
             # after the access guard: limits count the principal it sets (web/ratelimit.py)
             dependencies=[Depends(limit_event)],
             responses={200: {"description": "Duplicate: this (id, time) was already stored"},
                        429: RESPONSE_429,
                        413: {"description": "Body over MAX_EVENT_BYTES"},
                        422: rules_422(*_EVENT_RULES, description="Invalid body, naming the field"),
                        503: {"description": "Database unavailable or writer queue full"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": _EVENT_SCHEMA}, "text/plain": _as_text(_EVENT_SCHEMA)}}})
@fast(single_event)
async def create_event(request: Request):
    """One event (EventCreateSchema). Answered 201 once committed; 200 with `"duplicate": true`
    when its (id, time) was already stored. The tracker's hot path: served by the fast path
    (web/fastpath.py) from this declaration."""
    return await single_event(request)


@router.post("/batch", response_model=BatchResult, status_code=201,
             summary="Create up to BATCH_MAX_EVENTS events in one transaction",
             dependencies=[Depends(limit_batch)],
             responses={200: {"description": "Nothing new: every event was a duplicate"},
                        413: {"description": "More events than BATCH_MAX_EVENTS, or than "
                                             "RATE_LIMIT_INGEST admits at once, or a body over "
                                             "MAX_BODY_BYTES"},
                        429: RESPONSE_429,
                        422: rules_422(*_EVENT_RULES, description="Invalid items, listed by index (and "
                                                                  "NDJSON line); nothing was written"),
                        503: {"description": "Database unavailable or writer queue full"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": _BATCH_SCHEMA},
                 "application/x-ndjson": {"schema": _EVENT_SCHEMA}, "text/plain": _as_text(_BATCH_SCHEMA)}}})
async def create_events_batch(request: Request):
    """A JSON array of events, or NDJSON (`Content-Type: application/x-ndjson`, one event per
    line), each in the shape of the single-event body. All or nothing: any invalid item and
    nothing is written; otherwise every event is committed in one transaction before the answer.
    Events whose (id, time) is already stored are counted as duplicates, not stored again."""
    state = request.app.state
    raw = await request.body()
    try:
        who = await _sender(request)
    except DatabaseUnavailable:
        return unavailable_response()
    args = (raw, request.headers.get("content-type", ""), state.settings.batch_max_events,
            state.enricher, who)
    try:
        if len(raw) >= OFF_LOOP_MIN_BYTES:
            records = await _off_loop(state, bodies.batch_records, *args)
        else:
            records = bodies.batch_records(*args)
    except bodies.BodyRejected as exc:
        return _rejected(exc, "batch")
    try:
        flags = await _submit(state, records, "batch")
    except (WriterOverloaded, WriterStopped):
        return overloaded_response()
    except EventRejected as exc:
        return _refused_by_database(exc, batch=True)
    duplicate_indexes = [i for i, new in enumerate(flags) if not new]
    stored = len(flags) - len(duplicate_indexes)
    body = {"stored": stored, "duplicates": len(duplicate_indexes),
            "ids": [str(r.id) for r in records], "duplicate_indexes": duplicate_indexes}
    return Response(json.dumps(body).encode(), status_code=201 if stored else 200,
                    media_type="application/json")
