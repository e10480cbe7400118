"""Who sent an event, as much as the service keeps of it: a daily pseudonym, never the address.

visitor_id = BLAKE2b(key = the day's salt, client IP | user agent | site host), 8 bytes, stored as
a signed bigint. The same person (address and browser) on the same site on the same UTC day
gets the same id; the next day's salt gives another, and once a salt is deleted (after 48 h,
salts.py) nothing can link the id to an address again.

- client IP: the socket's peer, or the address behind TRUSTED_PROXIES (web/client.py). The
  body's `ip_address` replaces it only when the request's principal has the `ingest` scope (a
  server-side sender reporting its own users); from anyone else it is ignored, silently,
  because seed 004's clients send it.
- user agent: the event's `user_agent` field, else the request's User-Agent header.
- site host: the host of the request's Origin header (the page's site, sent by browsers on
  cross-origin POSTs), else the Host header; lower-cased, without the port.

The raw IP is stored only with STORE_IP=true.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from urllib.parse import urlsplit

from ..auth.principal import INGEST, principal_of
from ..web.client import Network, client_ip


@dataclass(frozen=True, slots=True)
class Sender:
    """What the ingest path knows of the request, computed once per request (not per event)."""

    ip: str                 # the client address ('' when unknown)
    site: str               # the site host (Origin, else Host)
    header_ua: str          # the User-Agent header, for events without a user_agent field
    salt: bytes             # today's salt
    store_ip: bool          # STORE_IP
    trusted: bool           # the principal may set ip_address (ingest scope)

    def visitor_id(self, ip: str, ua: str | None) -> int:
        return visitor_hash(self.salt, ip, ua or self.header_ua, self.site)


def visitor_hash(salt: bytes, ip: str, ua: str, site: str) -> int:
    """The signed 64-bit id (a bigint column). NUL separates the parts: none of them holds one
    (NUL is refused in text fields, and headers cannot carry it)."""
    h = blake2b(f"{ip}\0{ua}\0{site}".encode("utf-8", "surrogatepass"), key=salt, digest_size=8)
    return int.from_bytes(h.digest(), "big", signed=True)


@lru_cache(maxsize=1024)  # a service sees a few sites: urlsplit once per Origin / Host value
def _host_of(value: str) -> str:
    """Host of an Origin ('https://shop.example:8443') or a Host header ('shop.example:8443')."""
    try:
        host = urlsplit(value if "//" in value else "//" + value).hostname
    except ValueError:
        return ""
    return (host or "").lower()


def site_host(scope) -> str:
    origin = host = ""
    for k, v in scope.get("headers", ()):
        if k == b"origin":
            origin = v.decode("latin-1")
        elif k == b"host":
            host = v.decode("latin-1")
    if origin and origin != "null":  # "null": a sandboxed or file: page, no site to speak of
        site = _host_of(origin)
        if site:
            return site
    return _host_of(host) if host else ""


def header_user_agent(scope) -> str:
    for k, v in scope.get("headers", ()):
        if k == b"user-agent":
            return v.decode("latin-1")
    return ""


def sender(scope, networks: tuple[Network, ...], salt: bytes, store_ip: bool) -> Sender:
    principal = principal_of(scope)
    return Sender(ip=client_ip(scope, networks), site=site_host(scope),
                  header_ua=header_user_agent(scope), salt=salt, store_ip=store_ip,
                  trusted=principal is not None and principal.has(INGEST))


def strip_referrer(referrer: str) -> str:
    """The referrer without its query string and fragment (they carry tokens, e-mail
    addresses, search terms); the host and path stay."""
    if "?" in referrer or "#" in referrer:
        return referrer.partition("#")[0].partition("?")[0]
    return referrer


def access_hash(salt: bytes, ip: str) -> str:
    """The client address as the access log shows it: keyed with the day's salt (so it rotates
    with it), in its own hash domain (`person`), so it never equals a stored visitor_id."""
    return blake2b(ip.encode(), key=salt, digest_size=8, person=b"access-log").hexdigest()
