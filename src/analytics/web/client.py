"""Who the client is: the socket's peer, or, when that peer is a trusted proxy, the address the
proxies say they forwarded for.

`X-Forwarded-For` and `Forwarded` are read from the right: each trusted hop appends the address
it received the request from, so the first address from the right that is not a trusted proxy is
the client. Anything further left was written by the client itself and proves nothing. From a
peer outside `TRUSTED_PROXIES` the headers are ignored: anyone can send them.

The answer is cached in the ASGI scope, so the rate limiter, the visitor hash and the access log
ask once per request.
"""
from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCOPE_KEY = "analytics.client_ip"
# for=192.0.2.1, for="[2001:db8::1]:4711", for="192.0.2.1:8080" (RFC 7239)
_FORWARDED_FOR = re.compile(r'(?i)(?:^|[;,\s])for\s*=\s*("?)([^;,"]*)\1')


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR list (a bare address is a /32 or /128). Raises ValueError naming the bad entry."""
    out = []
    for v in values:
        v = v.strip()
        if not v:
            continue
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: not an address or CIDR network: {v!r}") from None
    return tuple(out)


# Addresses repeat (the peer is a proxy or a returning client): parsing one with ipaddress was
# most of resolve()'s ~10 µs. Bounded; the values are immutable.
@lru_cache(maxsize=8192)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a header element: strips brackets and a port; None if it is not one."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def _trusted(addr, networks: tuple[Network, ...]) -> bool:
    return any(addr in n for n in networks)


def _hops(scope) -> list[str]:
    """Forwarded-for addresses, left to right, from `Forwarded` and else `X-Forwarded-For`."""
    forwarded, xff = [], []
    for k, v in scope.get("headers", ()):
        if k == b"forwarded":
            forwarded.extend(m.group(2) for m in _FORWARDED_FOR.finditer(v.decode("latin-1")))
        elif k == b"x-forwarded-for":
            xff.extend(v.decode("latin-1").split(","))
    return forwarded or xff


def resolve(scope, networks: tuple[Network, ...]) -> str:
    """The client address as text ('' when unknown, e.g. a Unix socket)."""
    peer = scope.get("client")
    addr = _address(peer[0]) if peer else None
    if addr is None:
        return ""
    if not networks or not _trusted(addr, networks):
        return str(addr)
    for hop in reversed(_hops(scope)):
        hop_addr = _address(hop)
        if hop_addr is None:
            # Garbage where a trusted proxy should have written an address: stop at the last
            # address we can vouch for (the proxy itself).
            break
        addr = hop_addr
        if not _trusted(addr, networks):
            break
    return str(addr)


def client_ip(scope, networks: tuple[Network, ...]) -> str:
    """resolve(), once per request."""
    cached = scope.get(_SCOPE_KEY)
    if cached is None:
        cached = scope[_SCOPE_KEY] = resolve(scope, networks)
    return cached
