"""The HTTP floor for `python -m bench ingest`: what the single-event endpoint could reach if
storing an event cost nothing. It lives only here, never in the service.

A FastAPI app that validates the same body with the service's EventCreateSchema and answers 201
with the event, without a database (no enrichment, no write, no middleware). Started by the
bench with the service's own gunicorn command (boot/gunicorn.conf.py, 2 uvicorn workers), under
the same wrk load as (c); the bench prints c/floor:

    gunicorn -c boot/gunicorn.conf.py bench.floor:app   (PYTHONPATH=src:.)
"""
from __future__ import annotations

import gc
import json
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone

from fastapi import FastAPI
from fastapi.responses import Response

from analytics.ingestion.schemas import EventCreateSchema


@asynccontextmanager
async def lifespan(app: FastAPI):
    # As the service does after its startup (main.py): full collections would otherwise walk
    # every object of FastAPI and pydantic several times a second under load.
    gc.collect()
    gc.freeze()
    yield


app = FastAPI(title="HTTP floor (benchmark only)", lifespan=lifespan)


@app.get("/readyz")
async def readyz():
    return {"status": "ok"}


@app.post("/api/events/", status_code=201)
async def create_event(payload: EventCreateSchema) -> Response:
    event_id = payload.id or uuid.uuid4()
    at = payload.time or datetime.now(timezone.utc)
    body = {"id": str(event_id), "time": at.isoformat().replace("+00:00", "Z"), "page": payload.page,
            "ip_address": payload.ip_address, "user_agent": payload.user_agent,
            "referrer": payload.referrer, "session_id": payload.session_id,
            "duration": payload.duration, "description": payload.description, "duplicate": False}
    return Response(json.dumps(body).encode(), status_code=201, media_type="application/json")
