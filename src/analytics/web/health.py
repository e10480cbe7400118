"""Liveness and readiness. /healthz never touches the database (Railway's healthcheck);
/readyz does, and says 503 while the database or the schema is not there. Every /readyz answer
also describes the worker that gave it (`process`: pid, RSS, event-loop lag; see looplag.py).

/readyz tells an anonymous caller only whether the worker is ready (`{"status": "ok"}` or
`{"status": "unavailable"}`, 200 or 503); the details (database, edition, writer counters,
process) are for an `admin` key or token. It refuses nobody: a load balancer's probe needs no
key, and a wrong credential just gets the anonymous answer."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..auth.guards import optional_principal
from ..auth.principal import ADMIN
from ..db import DatabaseUnavailable, connection
from .looplag import process_info

router = APIRouter()


@router.get("/")
async def greeting():
    return {"hello": "world"}


@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: the database or the schema is not there"}})
async def readyz(request: Request):
    """Ready or not (200/503). With an `admin` key or token: why, and this worker's details."""
    principal = await optional_principal(request)
    body = await _readiness(request)
    status = 503 if body["status"] != "ok" else 200
    if principal is None or not principal.has(ADMIN):
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=status)


async def _readiness(request: Request) -> dict:
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
        return body
    if not state.schema_ready.is_set():
        body["status"] = "unavailable"
        return body
    info = state.db_info
    body.update(timescaledb=info.timescaledb_version, edition=info.license,
                writer_queue=state.writer.queue_depth, writer=state.writer.stats_dict())
    reads = getattr(state, "reads", None)
    if reads is not None and reads.replicas:
        body["read_replicas"] = reads.describe()  # usable, replay lag, why not (never a URL)
    return body
