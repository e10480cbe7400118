"""401/403 answers, and their place in the OpenAPI schema of every guarded route.

A route is guarded when a guard of auth/guards.py is among its dependencies (its own or its
routers'): the schema then lists both ways to send a credential (HTTP bearer, X-API-Key) as
alternatives, and its 401 and 403 answers. Declared once, on the route; documented from there.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts

from .guards import AuthError, ingest_access, require_admin, require_read, require_stats_read

GUARDS = {require_read: "read", require_stats_read: "read' or 'share", require_admin: "admin",
          ingest_access: "ingest"}
SCHEMES = {"bearer": {"type": "http", "scheme": "bearer",
                      "description": "An API key (`ak_...`) or, with JWT_JWKS_URL set, a JWT"},
           "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key"}}
_ERROR = {"type": "object", "required": ["error", "detail"],
          "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}


async def _render(_: Request, exc: AuthError) -> JSONResponse:
    if exc.status == 401:
        return JSONResponse({"error": "unauthorized", "detail": exc.detail}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse({"error": "forbidden", "detail": exc.detail}, status_code=403)


def _guard_of(route) -> str | None:
    dependant = getattr(route, "dependant", None)
    for dep in getattr(dependant, "dependencies", ()):
        if dep.call in GUARDS:
            return GUARDS[dep.call]
    return None


def install(app: FastAPI) -> None:
    app.add_exception_handler(AuthError, _render)
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SCHEMES)
        for route in iter_route_contexts(app.router.routes):
            scope = _guard_of(route)
            if scope is None or not getattr(route, "include_in_schema", False):
                continue
            for method in route.methods:
                op = schema["paths"].get(route.path_format, {}).get(method.lower())
                if op is None:
                    continue
                # Optional for ingest (unless INGEST_KEY_REQUIRED): the empty alternative says so.
                op["security"] = [{"bearer": []}, {"apiKey": []}] + ([{}] if scope == "ingest" else [])
                responses = op.setdefault("responses", {})
                content = {"application/json": {"schema": _ERROR}}
                responses["401"] = {"description": f"No valid credential (this route needs '{scope}'): "
                                                   "missing, unknown, revoked or expired", "content": content}
                responses["403"] = {"description": "The credential does not have the scope this route needs"
                                                   + (", or the page's host is not in INGEST_ALLOWED_HOSTS"
                                                      if scope == "ingest" else ""), "content": content}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
