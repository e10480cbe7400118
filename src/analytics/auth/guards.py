"""Access guards: `@guard` dependencies (web/fastpath.py) that both the FastAPI path and the fast
path run, declared once per route (`dependencies=[Depends(require_read)]`); the OpenAPI schema
is completed from the same declaration (auth/openapi.py).

Credentials: `Authorization: Bearer <credential>` or `X-API-Key: <credential>`. An API key
(`ak_...`) is checked against the worker's in-memory table (auth/store.py: no database round
trip); anything else shaped like a JWT is verified against JWT_JWKS_URL (auth/jwt.py) when that
is set. A credential that is sent is always checked: a wrong, revoked or expired one is a 401,
also where none is needed (a typo should not look like success).

- require_read: a `read` (or `admin`) principal, unless PUBLIC_READS.
- require_stats_read: the same, or a `share` principal (a dashboard share link's token): the
  stats routes only, what /dashboard reads.
- require_admin: an `admin` principal.
- ingest_access: open to browsers; INGEST_ALLOWED_HOSTS restricts by the page's host
  (`Origin`, else `Referer`), INGEST_KEY_REQUIRED asks for an `ingest` key. A request with an
  `ingest` key is a server-side sender: the host list does not apply to it.

Each sets the request's principal (auth/principal.py) for what runs after it.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from ..db import DatabaseUnavailable
from ..web.fastpath import guard
from .jwt import KeysUnavailable, TokenInvalid, looks_like_jwt
from .principal import ADMIN, INGEST, READ, SHARE, Principal, set_principal

HOW_TO_GET_A_KEY = ("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. An operator "
                    "creates one with `make key NAME=dashboard SCOPE=read` (or `python -m analytics keys "
                    "create --name dashboard --scope read`); it is shown once.")


class AuthError(Exception):
    """401 (no or bad credentials) or 403 (valid, but not allowed): rendered by auth.errors."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


def _unauthorized(why: str) -> AuthError:
    return AuthError(401, f"{why} {HOW_TO_GET_A_KEY}")


def credential(request: Request) -> str | None:
    """The credential sent, if any: the bearer token or X-API-Key. Different credentials in one
    request (two headers, or both kinds) are refused rather than one of them picked: a wrong one
    would go unchecked. The same one sent twice (a client that fills in both schemes) is fine."""
    # One pass over the raw headers (ASGI names them in lower case): every ingest request asks.
    auths: list[bytes] = []
    keys: list[bytes] = []
    for name, value in request.scope.get("headers", ()):
        if name == b"authorization":
            auths.append(value)
        elif name == b"x-api-key":
            keys.append(value)
    if not auths and not keys:
        return None
    sent = {_bearer(a) for a in auths} | {k.decode("latin-1").strip() for k in keys}
    if len(sent) > 1:
        raise _unauthorized("Send one credential: one 'Authorization: Bearer ...' or one 'X-API-Key' "
                            "header (or the same key in both).")
    return sent.pop()


def _bearer(header: bytes) -> str:
    scheme, _, value = header.decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    raise _unauthorized("The Authorization header is not 'Bearer <key or token>'.")


async def authenticate(request: Request) -> Principal | None:
    """The principal the request's credential names; None without one; AuthError for a bad one."""
    cred = credential(request)
    if cred is None:
        return None
    state = request.app.state
    keys = state.keys
    if cred.startswith("ak_"):
        if not keys.loaded:
            raise DatabaseUnavailable()  # keys not known yet: 503, not a wrong "no"
        principal = keys.lookup(cred)
        if principal is None:
            raise _unauthorized("This API key is not valid (unknown, mistyped or revoked).")
        return principal
    verifier = getattr(state, "jwt", None)
    if verifier is not None and looks_like_jwt(cred):
        try:
            return await verifier.verify(cred)
        except TokenInvalid as exc:
            raise _unauthorized(f"The token was refused: {exc}.") from None
        except KeysUnavailable:
            raise DatabaseUnavailable() from None  # the issuer's keys are unreachable: 503
    raise _unauthorized("This credential is neither an API key nor an accepted token.")


def _require(principal: Principal | None, scope: str) -> None:
    if principal is None:
        raise _unauthorized(f"This route needs a '{scope}' API key or token.")
    if not principal.has(scope):
        raise AuthError(403, f"This key or token does not have the '{scope}' scope this route needs.")


@guard
async def require_read(request: Request) -> None:
    """Reads: a `read` key or token (unless PUBLIC_READS)."""
    principal = await authenticate(request)
    set_principal(request.scope, principal)
    if principal is None and request.app.state.settings.public_reads:
        return
    _require(principal, READ)


@guard
async def require_stats_read(request: Request) -> None:
    """The stats reads (/api/v1/stats/*): as require_read, or a dashboard share link's token."""
    principal = await authenticate(request)
    set_principal(request.scope, principal)
    if principal is None and request.app.state.settings.public_reads:
        return
    if principal is not None and SHARE in principal.scopes:
        return
    _require(principal, READ)


@guard
async def require_admin(request: Request) -> None:
    """Operator routes (/metrics, readiness details, key management): an `admin` key."""
    principal = await authenticate(request)
    set_principal(request.scope, principal)
    _require(principal, ADMIN)


def _page_host(request: Request) -> str | None:
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value and value != "null":
            host = urlsplit(value).hostname
            if host:
                return host.lower()
    return None


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """`example.com` matches that host; `*.example.com` (or `.example.com`) its subdomains too."""
    if host is None:
        return False
    for entry in allowed:
        if entry.startswith("*.") or entry.startswith("."):
            base = entry.lstrip("*").lstrip(".")
            if host == base or host.endswith("." + base):
                return True
        elif host == entry:
            return True
    return False


@guard
async def ingest_access(request: Request) -> None:
    """Ingest: open to browsers, optionally INGEST_ALLOWED_HOSTS / INGEST_KEY_REQUIRED; a key, if
    sent, sets the principal (an `ingest` key may report `ip_address`)."""
    settings = request.app.state.settings
    principal = await authenticate(request)
    set_principal(request.scope, principal)
    if settings.ingest_key_required:
        _require(principal, INGEST)
        return
    if principal is not None and principal.has(INGEST):
        return
    if settings.ingest_allowed_hosts and not host_allowed(_page_host(request), settings.ingest_allowed_hosts):
        raise AuthError(403, "Events are accepted from the sites in INGEST_ALLOWED_HOSTS only (by the "
                             "request's Origin or Referer), or with an 'ingest' API key.")


async def optional_principal(request: Request) -> Principal | None:
    """For routes that show more to some callers (/readyz): the principal, or None for anonymous
    callers and bad credentials alike (such a route refuses nobody)."""
    try:
        return await authenticate(request)
    except (AuthError, DatabaseUnavailable):
        return None
