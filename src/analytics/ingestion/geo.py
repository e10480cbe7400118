"""Country of a client address, looked up at ingest before the address is discarded.

Contract (issue 11, part 1): `country_of(address)` returns an ISO 3166-1 alpha-2 code in upper
case, or '' when the address is missing, private, unparsable or not in the database. It is
called once per event on the write path, so it must be cheap (no I/O per call).
"""
from __future__ import annotations


def country_of(address: str | None) -> str:
    return ""
