"""Fast paths: the hottest routes answered straight from the middleware stack, from the route's
own declaration.

FastAPI's per-request layers (exception and exit-stack middleware, routing, dependency solving,
request/response wrapping) cost more CPU than validating and writing one event, or than a 2 ms
dashboard answer. A route opts in by marking its endpoint with `@fast(handler)`, where
`handler(request) -> Response` is everything the endpoint does. `FastPaths`, installed innermost,
builds its table from the app's routes on first use, so that nothing about a route is declared
twice:

- the path and method are the route's;
- the route's dependencies (its own, its router's, its include_router's) run on the fast path too,
  in declaration order. Each must be a `guard` (an `async def g(request) -> None` that raises an
  HTTP error: an API key check, a rate limit) or a parameter parser that the handler performs
  itself (`parses=`). A route with any other dependency is served by FastAPI (and logged once):
  adding a dependency can make a route slower, never let the fast path skip it;
- errors are shaped by the app's own exception handlers, and the responses are the handler's,
  the same bytes on both paths.

`FAST_PATHS=false` turns it off (the test suite runs the API tests both ways).
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from fastapi.routing import iter_route_contexts
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

log = logging.getLogger("analytics.fastpath")

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Request], Awaitable[None]]


def guard(fn: Guard) -> Guard:
    """Mark a dependency that the fast path may run itself: `async def fn(request: Request)`,
    which returns nothing useful and raises (ApiError, HTTPException) to refuse the request."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 1 or params[0].annotation not in (Request, "Request"):
        raise TypeError(f"a guard takes exactly one parameter, `request: Request`: {fn!r}")
    fn.__analytics_guard__ = True  # type: ignore[attr-defined]
    return fn


@dataclass(frozen=True)
class _Spec:
    handler: Handler
    parses: frozenset


def fast(handler: Handler, *, parses: tuple = ()) -> Callable:
    """Mark a route endpoint as answered by `handler(request)` on the fast path. `parses` lists
    the dependencies whose work the handler does itself (e.g. the query-parameter parser)."""
    def mark(endpoint):
        endpoint.__analytics_fast__ = _Spec(handler, frozenset(parses))
        return endpoint
    return mark


@dataclass(frozen=True)
class FastRoute:
    method: str
    path: str
    guards: tuple[Guard, ...]
    handler: Handler


def fast_routes(routes) -> dict[tuple[str, str], FastRoute]:
    """(method, path) -> FastRoute for every marked route that the fast path can serve whole."""
    table: dict[tuple[str, str], FastRoute] = {}
    # The routes as FastAPI itself serves and documents them: included routers flattened, with
    # the dependencies of every include_router level added to each route's own.
    for route in iter_route_contexts(routes):
        spec = getattr(getattr(route, "endpoint", None), "__analytics_fast__", None)
        if spec is None or getattr(route, "dependant", None) is None:
            continue
        if route.param_convertors:
            log.warning("fast path skipped for %s: path parameters are not supported", route.path)
            continue
        guards, unsupported = [], []
        for dep in route.dependant.dependencies:
            if dep.call in spec.parses:
                continue
            if getattr(dep.call, "__analytics_guard__", False):
                if dep.call not in guards:  # FastAPI runs a dependency once per request
                    guards.append(dep.call)
            else:
                unsupported.append(getattr(dep.call, "__name__", repr(dep.call)))
        if unsupported:
            log.warning("fast path skipped for %s %s: dependencies it cannot run: %s",
                        sorted(route.methods), route.path, ", ".join(unsupported))
            continue
        for method in route.methods:
            table[(method, route.path)] = FastRoute(method, route.path, tuple(guards), spec.handler)
    return table


def _handler_for(handlers: dict, exc: Exception):
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


class FastPaths:
    """ASGI middleware serving the routes `fast_routes` finds; anything else goes on to the app.
    Install it innermost (inside CORS, body-size, request-id/access-log and schema-ready)."""

    def __init__(self, app, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self._table: dict[tuple[str, str], FastRoute] | None = None

    def table(self, app) -> dict[tuple[str, str], FastRoute]:
        if self._table is None:
            self._table = fast_routes(app.router.routes) if self.enabled else {}
            if self._table:
                log.info("fast paths: %s", ", ".join(f"{m} {p}" for m, p in sorted(self._table)))
        return self._table

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self.table(scope["app"]).get((scope["method"], scope["path"]))
        if route is None:
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            for g in route.guards:
                await g(request)
            response = await route.handler(request)
        except ClientDisconnect:
            return
        except Exception as exc:  # noqa: BLE001 - shaped by the app's own handlers
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
