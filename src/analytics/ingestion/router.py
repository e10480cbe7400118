"""POST /api/events/: validate, enrich, hand to the group-commit writer, answer after COMMIT."""
from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..web.errors import ApiError, unavailable_response
from .pipeline import InvalidEvent
from .schemas import EventCreateSchema, EventModel
from .writer import WriterOverloaded, WriterStopped

router = APIRouter()


def _event_json(r, duplicate: bool) -> bytes:
    return json.dumps({
        "id": str(r.id), "time": r.time.isoformat().replace("+00:00", "Z"), "page": r.page,
        "ip_address": r.ip_address, "user_agent": r.user_agent, "referrer": r.referrer,
        "session_id": r.session_id, "duration": r.duration, "description": r.description,
        "os": r.os, "browser": r.browser, "device": r.device, "is_bot": r.is_bot,
        "duplicate": duplicate,
    }).encode()


def overloaded_response() -> Response:
    return Response(b'{"error":"overloaded","detail":"Too many events in flight; retry shortly."}',
                    status_code=503, media_type="application/json", headers={"Retry-After": "1"})


@router.post("/", response_model=EventModel, status_code=201,
             responses={200: {"description": "Duplicate: this (id, time) was already stored"},
                        503: {"description": "Database unavailable or writer queue full"}})
async def create_event(payload: EventCreateSchema, request: Request):
    state = request.app.state
    try:
        record = state.enricher.to_record(payload)
    except InvalidEvent as exc:
        raise ApiError(422, exc.field, exc.message, loc_prefix="body") from None
    try:
        (new,) = await state.writer.submit([record])
    except (WriterOverloaded, WriterStopped):
        return overloaded_response()
    # DatabaseUnavailable propagates to the 503 handler.
    return Response(_event_json(record, not new), status_code=201 if new else 200,
                    media_type="application/json")
