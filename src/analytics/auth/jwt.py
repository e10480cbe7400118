"""JWTs from an identity provider (Cognito, Auth0, Keycloak, ...), verified with PyJWT against
the provider's JWKS (JWT_JWKS_URL).

- The JWKS is fetched in a thread (PyJWKClient is synchronous; the event loop never waits on
  the network), kept in memory, fetched again when a token names an unknown `kid` (the
  provider rotated its keys) but at most once per REFETCH_MIN_S (a flood of made-up kids
  costs one fetch, not one per request), and at the latest after MAX_AGE_S (a key the provider
  withdrew stops working).
- Only asymmetric algorithms are accepted, and only the one the token's key is for: no `none`,
  no HMAC with a public key as the secret.
- `exp` is required; `iss` and `aud` are checked when JWT_ISSUER / JWT_AUDIENCE are set.
- The scopes are read from JWT_SCOPE_CLAIM (default `scope`): a space-separated string or a
  list. `read`, `ingest` and `admin` count, also as the last part of a resource-server scope
  (`analytics/read`, as Cognito names them).
"""
from __future__ import annotations

import asyncio
import logging
import time

import jwt
from jwt import PyJWK, PyJWKClient

from .principal import SCOPES, Principal

log = logging.getLogger("analytics.auth")

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
REFETCH_MIN_S = 10.0
MAX_AGE_S = 600.0
LEEWAY_S = 30


class TokenInvalid(Exception):
    """The token is not acceptable; the message says why (in our words)."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched: nothing can be verified right now."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and len(token) < 16384


def scopes_from(claim) -> frozenset[str]:
    if isinstance(claim, str):
        items = claim.split()
    elif isinstance(claim, (list, tuple)):
        items = [c for c in claim if isinstance(c, str)]
    else:
        items = []
    return frozenset(s.rsplit("/", 1)[-1] for s in items) & frozenset(SCOPES)


_FAMILY = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}


def _fits(key: PyJWK, alg: str) -> bool:
    """The token's algorithm is the key's: its `alg` when the JWKS states one, else its type's."""
    if key.algorithm_name in ASYMMETRIC and key.algorithm_name == alg:
        return True
    stated = key._jwk_data.get("alg") if isinstance(key._jwk_data, dict) else None
    return stated is None and alg.startswith(_FAMILY.get(key.key_type, ("-",)))


class JwtVerifier:
    def __init__(self, jwks_url: str, *, issuer: str = "", audience: str = "", scope_claim: str = "scope") -> None:
        self.issuer = issuer or None
        self.audience = audience or None
        self.scope_claim = scope_claim
        self._client = PyJWKClient(jwks_url, cache_jwk_set=False, cache_keys=False, timeout=5)
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < REFETCH_MIN_S:
                return  # someone else just did (or a flood of unknown kids)
            self._fetched_at = time.monotonic()
            try:
                jwk_set = await asyncio.to_thread(self._client.get_jwk_set, True)
            except jwt.PyJWKClientError as exc:
                log.warning("jwt: cannot fetch the JWKS (%s)", type(exc).__name__)
                if not self._keys:
                    raise KeysUnavailable() from None
                return  # keep the keys we have
            self._keys = {k.key_id: k for k in jwk_set.keys}

    async def _key(self, kid) -> PyJWK:
        stale = time.monotonic() - self._fetched_at > MAX_AGE_S
        if kid not in self._keys or stale:
            await self._fetch()
        key = self._keys.get(kid)
        if key is None:
            raise TokenInvalid("the token's signing key (kid) is not one of the issuer's keys")
        return key

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid("not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC:
            raise TokenInvalid("the token's algorithm is not accepted")
        key = await self._key(header.get("kid"))
        if not _fits(key, alg):
            raise TokenInvalid("the token's algorithm does not match its key")
        required = ["exp"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], issuer=self.issuer, audience=self.audience,
                                leeway=LEEWAY_S, options={"require": required, "verify_aud": bool(self.audience)})
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise TokenInvalid("the token's issuer is not JWT_ISSUER") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("the token's audience is not JWT_AUDIENCE") from None
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"the token is not valid ({type(exc).__name__})") from None
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else "jwt"
        return Principal("jwt", subject[:200], scopes_from(claims.get(self.scope_claim)))
