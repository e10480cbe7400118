"""Who is asking: the contract between authentication (which sets it) and everything that
depends on it (rate limits per key, the `ip_address` body field honoured only from an `ingest`
key, metrics).

A request's principal lives in the ASGI scope's state, which both the FastAPI path and the
fast path share (`request.state` is a view of `scope["state"]`).
"""
from __future__ import annotations

from dataclasses import dataclass

READ, INGEST, ADMIN = "read", "ingest", "admin"
# A dashboard share link's token: the stats reads only (not the export, the seed's raw-event
# reads, /metrics), so a link that leaks shows charts and nothing else.
SHARE = "share"
SCOPES = (READ, INGEST, ADMIN, SHARE)


@dataclass(frozen=True)
class Principal:
    kind: str               # 'key' | 'jwt' | 'share'
    name: str               # the key's name, or the token's subject
    scopes: frozenset[str]  # admin implies nothing by itself; callers check what they need

    def has(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


_STATE_KEY = "principal"


def set_principal(scope, principal: Principal | None) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = principal


def principal_of(scope) -> Principal | None:
    """The authenticated principal of this request, or None (anonymous, or not checked)."""
    return scope.get("state", {}).get(_STATE_KEY)
