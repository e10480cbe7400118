"""The fast path serves a route from the route's own declaration: its guards run, a dependency it
cannot run turns it off for that route (never skipped), errors go through the app's handlers.

The mechanism is tested on a small app of its own (no database involved); the service's API
tests run against servers with the fast paths on and off (conftest's `api_mode`)."""
from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from analytics.web.fastpath import FastPaths, fast, fast_routes, guard

calls: list[str] = []


@guard
async def needs_key(request: Request) -> None:
    calls.append("guard")
    if request.headers.get("x-key") != "ok":
        raise HTTPException(401, "no key")


async def opaque(request: Request) -> str:  # not a guard: the fast path cannot run it
    calls.append("opaque")
    return "x"


async def hello(request: Request) -> Response:
    calls.append("handler")
    if request.query_params.get("boom"):
        raise ValueError("boom")
    return Response(b'{"hello":"fast"}', media_type="application/json")


def _app(enabled: bool = True) -> FastAPI:
    app = FastAPI()
    router = APIRouter()

    @router.get("/open")
    @fast(hello)
    async def open_():
        calls.append("slow")
        return Response(b'{"hello":"fast"}', media_type="application/json")

    @router.get("/guarded", dependencies=[Depends(needs_key)])
    @fast(hello)
    async def guarded():
        calls.append("slow")
        return Response(b'{"hello":"fast"}', media_type="application/json")

    @router.get("/opaque", dependencies=[Depends(opaque)])
    @fast(hello)
    async def with_opaque():
        calls.append("slow")
        return Response(b'{"hello":"slow"}', media_type="application/json")

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError):
        return JSONResponse({"error": "value"}, status_code=422)

    # A guard added at include time applies on the fast path too.
    app.include_router(router, prefix="/a")
    app.include_router(router, prefix="/b", dependencies=[Depends(needs_key)])
    app.add_middleware(FastPaths, enabled=enabled)
    return app


def _get(app: FastAPI, path: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get(path, **kw)
    calls.clear()
    return asyncio.run(go())


def test_table_follows_the_declarations():
    app = _app()
    table = fast_routes(app.router.routes)
    assert set(table) == {("GET", "/a/open"), ("GET", "/a/guarded"), ("GET", "/b/open"), ("GET", "/b/guarded")}
    assert table[("GET", "/a/open")].guards == ()
    assert table[("GET", "/b/open")].guards == (needs_key,)
    assert table[("GET", "/b/guarded")].guards == (needs_key,)  # once, as FastAPI runs it


def test_fast_route_runs_its_guards_and_handler():
    app = _app()
    r = _get(app, "/a/open")
    assert r.status_code == 200 and calls == ["handler"]  # not the FastAPI endpoint
    r = _get(app, "/a/guarded")
    assert r.status_code == 401 and r.json() == {"detail": "no key"} and calls == ["guard"]
    r = _get(app, "/a/guarded", headers={"x-key": "ok"})
    assert r.status_code == 200 and calls == ["guard", "handler"]
    r = _get(app, "/b/open")  # the include-level guard
    assert r.status_code == 401 and calls == ["guard"]


def test_unknown_dependency_means_no_fast_path():
    app = _app()
    r = _get(app, "/a/opaque")
    assert r.json() == {"hello": "slow"} and calls == ["opaque", "slow"]


def test_errors_use_the_apps_handlers():
    r = _get(_app(), "/a/open", params={"boom": "1"})
    assert r.status_code == 422 and r.json() == {"error": "value"}


def test_disabled_serves_everything_through_fastapi():
    app = _app(enabled=False)
    r = _get(app, "/a/open")
    assert r.status_code == 200 and calls == ["slow"]
    r = _get(app, "/b/guarded")
    assert r.status_code == 401 and calls == ["guard"]


def test_service_routes_are_served_fast():
    """The hot routes of the service stay on the fast path (a dependency that it cannot run
    would silently make them slower)."""
    from analytics.main import create_app

    table = fast_routes(create_app().router.routes)
    assert {("POST", "/api/events/"), ("GET", "/api/v1/stats/timeseries"),
            ("GET", "/api/v1/stats/breakdown"), ("GET", "/api/v1/stats/totals")} <= set(table)
