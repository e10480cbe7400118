"""Liveness and readiness. /healthz never touches the database (Railway's healthcheck);
/readyz does, and says 503 while the database or the schema is not there. Every /readyz answer
also describes the worker that gave it (`process`: pid, RSS, event-loop lag; see looplag.py)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..db import DatabaseUnavailable, connection
from .looplag import process_info

router = APIRouter()


@router.get("/")
async def greeting():
    return {"hello": "world"}


@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request):
    state = request.app.state
    body = {"status": "ok", "database": "ok", "schema": "ready" if state.schema_ready.is_set() else "pending",
            "process": process_info(getattr(state, "loop_lag", None))}
    try:
        # The writer's pool: readiness is "can this worker ingest", and a read pool filled by
        # expensive questions must not make it flap.
        async with asyncio.timeout(3):
            async with connection(state.write_pool) as conn:
                await conn.execute("SELECT 1")
    except (DatabaseUnavailable, TimeoutError):
        body.update(status="unavailable", database="unreachable")
        return JSONResponse(body, status_code=503)
    if not state.schema_ready.is_set():
        body["status"] = "unavailable"
        return JSONResponse(body, status_code=503)
    info = state.db_info
    body.update(timescaledb=info.timescaledb_version, edition=info.license,
                writer_queue=state.writer.queue_depth, writer=state.writer.stats_dict())
    reads = getattr(state, "reads", None)
    if reads is not None and reads.replicas:
        body["read_replicas"] = reads.describe()  # usable, replay lag, why not (never a URL)
    return body
