"""Country of a client address, looked up at ingest before the address is discarded.

Contract (issue 11, part 1): `country_of(address)` returns an ISO 3166-1 alpha-2 code in upper
case, or '' when the address is missing, private, reserved, unparsable or not in the database.
It is called once per event on the write path, so it must be cheap (no I/O per call).

Where countries come from:
- by default, iptocc: the country each block is registered to at the five Regional Internet
  Registries, compiled into the wheel (refreshed with each release; no file, no network). It
  loads in about 1 ms and 0.6 MiB, and answers in under 1 µs (bench/geo.py), so it is loaded
  lazily, by the first lookup of each worker (no need to share it through gunicorn's preload);
- when GEOIP_DB names a MaxMind GeoLite2/GeoIP2 Country or City file, or a DB-IP country lite
  file (.mmdb), that file instead, read with maxminddb (memory-mapped: the workers share the
  pages). The file is opened when the settings are read (config.py), so that a missing or
  unreadable one stops the service at startup with the setting named, never an event.
"""
from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Callable
from functools import lru_cache

Lookup = Callable[[str], str]

# Codes that registries and older GeoIP files use for "a region", not a country.
_NOT_COUNTRIES = frozenset({"EU", "AP", "ZZ"})


class GeoDatabaseError(ValueError):
    """GEOIP_DB names a file that cannot be used; the message names the setting."""


_lookup: Lookup | None = None  # this worker's, set by load()


def country_of(address: str | None) -> str:
    if not address:
        return ""
    lookup = _lookup or load()
    if address[:7].lower() == "::ffff:":  # an IPv4 client seen on a dual-stack socket
        address = _unmapped(address)
    return lookup(address)


def load(path: str | None = None) -> Lookup:
    """The lookup of this worker: GEOIP_DB's file when set (`path` overrides it), else the
    packaged database. Cheap after the first call; callers may call it at startup to warm."""
    global _lookup
    if path is None:
        from ..config import get_settings  # here, not at import: config.py imports this module
        path = get_settings().geoip_db
    _lookup = _mmdb_lookup(open_mmdb(path)) if path else _packaged_lookup()
    return _lookup


def _clean(code: object) -> str:
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
        code = code.upper()
        return "" if code in _NOT_COUNTRIES else code
    return ""


def _unmapped(address: str) -> str:
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    # With a zone (%eth0) it is no client's address: left as is, it gets no country.
    return str(ip.ipv4_mapped) if ip.ipv4_mapped and not ip.scope_id else address


# Blocks that are nobody's country (IANA's special-purpose address registries, RFC 6890 and
# successors): private, shared (CGNAT), loopback, link-local, documentation, benchmarking,
# multicast, reserved; in IPv6 also 6to4 and NAT64 (the IPv4 address inside decides, unseen).
# Kept as sorted integer ranges: ipaddress's own is_global walks its lists in ~10 µs a call.
_SPECIAL_BLOCKS = {
    4: ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"],
    6: ["::/127", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
        "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8"],
}


def _ranges(blocks: list[str]) -> tuple[list[int], list[int]]:
    nets = sorted(ipaddress.ip_network(b) for b in blocks)
    return [int(n[0]) for n in nets], [int(n[-1]) for n in nets]


_SPECIAL_RANGES = {version: _ranges(blocks) for version, blocks in _SPECIAL_BLOCKS.items()}


def _special(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    starts, ends = _SPECIAL_RANGES[ip.version]
    n = int(ip)
    i = bisect_right(starts, n) - 1
    return i >= 0 and n <= ends[i]


def _packaged_lookup() -> Lookup:
    from iptocc import country_code  # Rust; answers None for private, reserved and garbage

    def lookup(address: str) -> str:
        return _clean(country_code(address))
    return lookup


@lru_cache(maxsize=4)
def open_mmdb(path: str):
    """The reader of a .mmdb file, opened once per process and path; GeoDatabaseError (naming
    GEOIP_DB) when the file is missing, unreadable or not a MaxMind DB with countries."""
    import maxminddb

    try:
        reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoDatabaseError(f"GEOIP_DB={path!r} cannot be read as a MaxMind DB (.mmdb) file: "
                               f"{exc}") from None
    kind = str(reader.metadata().database_type)
    if "ASN" in kind.upper() or "ISP" in kind.upper():
        raise GeoDatabaseError(f"GEOIP_DB={path!r} is a {kind} database, which has no countries; "
                               "use a GeoLite2/GeoIP2 Country or City, or a DB-IP country file")
    return reader


def _mmdb_lookup(reader) -> Lookup:
    # The address is parsed here, strictly: the reader's own parser (getaddrinfo) would take
    # "1.2.3" or "8.8.8.8%x". A City file costs more per look-up than a Country file: the reader
    # decodes the whole record (every name in every language); bench/geo.py has the figures.
    get = reader.get

    def lookup(address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        if ip.version == 6 and ip.scope_id:  # fe80::1%eth0: a zone, not a client address
            return ""
        try:
            record = get(ip)
        except ValueError:  # an IPv6 address in an IPv4-only file
            return ""
        # Private, loopback, link-local, documentation, multicast...: '' whatever the file says
        # (checked after the look-up: the files hold none of them).
        if not isinstance(record, dict) or _special(ip):
            return ""
        # `country` is where the address is used; `registered_country` (its registry's) when
        # the file has no better answer, e.g. for some anycast and satellite ranges.
        for key in ("country", "registered_country"):
            place = record.get(key)
            if isinstance(place, dict) and (code := _clean(place.get("iso_code"))):
                return code
        return ""
    return lookup
