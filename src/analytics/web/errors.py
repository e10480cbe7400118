"""Every error is JSON that names the field; database internals never reach the client."""
from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..db import CommitOutcomeUnknown, DatabaseUnavailable, ReadsBusy, refused_as_too_complex
from .middleware import CLIENT_CLOSED

log = logging.getLogger("analytics.errors")


class ApiError(Exception):
    """A 4xx with a field name: raised by services, rendered here."""

    def __init__(self, status: int, field: str | None, msg: str, type_: str = "value_error",
                 loc_prefix: str = "query") -> None:
        self.status, self.field, self.msg, self.type = status, field, msg, type_
        self.loc_prefix = loc_prefix


def validation_error(field: str, msg: str, where: str = "query", rule: str = "value_error") -> ApiError:
    """A 422 naming `field`. `rule` is the error's type: one of web/rules.py's names for the
    rules that the OpenAPI schema cannot state."""
    return ApiError(422, field, msg, type_=rule, loc_prefix=where)


def _clean(errors: list[dict]) -> list[dict]:
    # FastAPI echoes the offending input; a 1 MB bad field should not come back, nor any
    # internals. Keep the location, the message and the type.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in errors]


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. (Starlette's 405 names only the methods of
    the first route that matches the path: POST for /api/events/, which GET serves too.)"""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and route.methods and regex.match(request.url.path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def outcome_unknown_response(timeout_s: float) -> JSONResponse:
    """A write not committed within WRITE_TIMEOUT_SECONDS: not known to be lost, not known to be
    stored. Told apart from an outage, so that clients and operators can tell overload from it."""
    return JSONResponse({"error": "write_timeout",
                         "detail": f"Not committed within {timeout_s:g} s (WRITE_TIMEOUT_SECONDS): the database "
                                   "is slow or busy, and the events may still be stored. Retry with the same "
                                   "id and time: duplicates are recognised."},
                        status_code=503, headers={"Retry-After": "2"})


def unavailable_response() -> JSONResponse:
    return JSONResponse({"error": "database_unavailable",
                         "detail": "The database is unavailable; retry shortly."},
                        status_code=503, headers={"Retry-After": "2"})


_TOO_EXPENSIVE = ("This question is too expensive to answer within the read time limit. Narrow it: a shorter "
                  "range (start/end), a coarser interval or duration, fewer group_by dimensions, fewer pages, "
                  "or fewer costly metrics (unique_sessions, median_duration, p95_duration).")
_TOO_COMPLEX = ("The database refused this question as too complex (too many columns or too deep a "
                "statement). Ask with fewer group_by items, filters or metrics.")


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return JSONResponse({"error": "validation_error", "detail": _clean(exc.errors())},
                            status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        loc = [exc.loc_prefix, exc.field] if exc.field else [exc.loc_prefix]
        return JSONResponse({"error": "validation_error" if exc.status == 422 else "error",
                             "detail": [{"loc": loc, "msg": exc.msg, "type": exc.type}]},
                            status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        error = "body_too_large" if exc.status_code == 413 else "http_error"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return JSONResponse({"error": error, "detail": exc.detail},
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(DatabaseUnavailable)
    async def _unavailable(_: Request, exc: DatabaseUnavailable):
        return unavailable_response()

    @app.exception_handler(CommitOutcomeUnknown)
    async def _late(request: Request, exc: CommitOutcomeUnknown):
        return outcome_unknown_response(request.app.state.settings.write_timeout_s)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_: Request, exc: PoolTimeout):
        return unavailable_response()

    @app.exception_handler(psycopg.OperationalError)
    async def _operational(_: Request, exc: psycopg.OperationalError):
        if refused_as_too_complex(exc):
            # A read the database refuses to plan or run: the same question will be refused again.
            # (Writes never get here: the writer answers its own data errors.)
            log.info("read refused by a database limit: %s", type(exc).__name__)
            return JSONResponse({"error": "query_too_complex", "detail": _TOO_COMPLEX}, status_code=422)
        log.warning("database operational error: %s", type(exc).__name__)
        return unavailable_response()

    @app.exception_handler(ReadsBusy)
    async def _busy(_: Request, exc: ReadsBusy):
        return JSONResponse({"error": "reads_busy", "detail": exc.detail},
                            status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def _timeout(_: Request, exc: psycopg.Error):
        # Reads run under READ_STATEMENT_TIMEOUT_MS: asking again will not help, asking less will.
        return JSONResponse({"error": "query_timeout", "detail": _TOO_EXPENSIVE},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect):
        # The client closed the connection while its body was read: nobody to answer, nothing
        # went wrong here. No traceback (a 100-byte request would otherwise log ~6 KB of one).
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse({"error": "internal_error", "detail": "Internal server error."},
                            status_code=500)
