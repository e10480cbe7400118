"""From a validated request body to the row that is stored: one small step at a time."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from ..privacy.visitor import Sender, strip_referrer
from .enrich import UserAgentCache, referrer_host
from .fields import check_name, check_props, locate
from .geo import country_of
from .invalid import InvalidEvent, utf8_size
from .schemas import BROWSER_MAX_CHARS, MAX_KEY_BYTES, MAX_PAGE_BYTES, EventCreateSchema


class EventRecord(NamedTuple):
    """One row of the events table, in COLUMNS order."""

    id: uuid.UUID
    time: datetime
    page: str
    ip_address: str | None
    user_agent: str | None
    referrer: str | None
    referrer_host: str
    session_id: str | None
    duration: int | None
    description: str | None
    os: str
    browser: str
    device: str
    is_bot: bool
    # The day's pseudonym of the sender (privacy/visitor.py); None for rows not from a request.
    visitor_id: int | None = None
    # issue 11 part 1 (ingestion/fields.py): what happened and where
    name: str = "pageview"
    props: str | None = None        # JSON text of the jsonb column
    hostname: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    country: str = ""              # ISO 3166-1 alpha-2, from the client address (ingestion/geo.py)


COLUMNS = EventRecord._fields


def _new_record(values: tuple) -> EventRecord:
    """An EventRecord from a tuple of every field in COLUMNS order, without the keyword
    constructor's cost."""
    if len(values) != len(COLUMNS):
        raise TypeError(f"an EventRecord has {len(COLUMNS)} fields, got {len(values)}")
    return tuple.__new__(EventRecord, values)


def _check_text(page: str, host: str) -> None:
    """The byte caps of the indexed text (see schemas.py), alone and together. (Text UTF-8 cannot
    encode, a lone surrogate, pydantic refuses already in every capped field; should one reach
    the database, the writer isolates it.) ASCII, the common case, costs a flag test."""
    size = len(page) if page.isascii() else utf8_size("page", page)
    if size > MAX_PAGE_BYTES:
        raise InvalidEvent("page", f"must be at most {MAX_PAGE_BYTES} bytes in UTF-8 (this one is "
                                   f"{size}): the database indexes it", "too_many_bytes")
    if host:
        both = size + (len(host) if host.isascii() else utf8_size("referrer", host))
        if both > MAX_KEY_BYTES:
            raise InvalidEvent("referrer", f"its host name ({both - size} bytes) and page ({size} bytes) "
                                           f"together must be at most {MAX_KEY_BYTES} bytes in UTF-8: "
                                           "the database indexes them together", "too_many_bytes")


def _describe(d: timedelta) -> str:
    """'7 days', '12 hours', '90 seconds': the window as configured, not rounded to 0 days."""
    secs = int(d.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size and secs % size == 0:
            n = secs // size
            return f"{n} {unit}" + ("s" if n != 1 else "")
    return f"{secs} seconds"


class Enricher:
    def __init__(self, ua_cache: UserAgentCache, max_age: timedelta, max_skew: timedelta) -> None:
        self.ua_cache = ua_cache
        self.max_age = max_age
        self.max_skew = max_skew

    def check_time(self, t: datetime | None, now: datetime) -> datetime:
        if t is None:
            return now
        if t > now + self.max_skew:
            raise InvalidEvent("time", "must not be in the future", "time_window")
        if t < now - self.max_age:
            raise InvalidEvent("time", f"must not be older than {_describe(self.max_age)}", "time_window")
        return t

    def to_record(self, ev: EventCreateSchema, now: datetime | None = None,
                  sender: Sender | None = None, memo: dict | None = None) -> EventRecord:
        """The row to store. With `sender` (every request), the visitor_id is computed and the
        IP kept only under STORE_IP; the body's ip_address counts only from an ingest key.
        Without one (tools, benchmarks), no IP and no visitor_id.

        `memo`, a dict the caller keeps for one request's events (a batch), holds each (address,
        user agent)'s visitor id and country: a browser's batch is one visitor, a server-side
        sender's a few. It lives no longer than the request, as the address does."""
        now = now or datetime.now(timezone.utc)
        ua = ev.user_agent or ""
        host = referrer_host(ev.referrer)
        page = ev.page
        if ev.url or not page or "?" in page:  # a URL to read, a query string to split
            page, hostname, utm_source, utm_medium, utm_campaign = locate(page, ev.url)
        else:
            hostname = utm_source = utm_medium = utm_campaign = ""
        _check_text(page, host)
        name = check_name(ev.name)
        props = check_props(ev.props)
        info = self.ua_cache.lookup(ua)
        browser = info.browser
        if len(browser) > BROWSER_MAX_CHARS:  # the key budget counts on it (schemas.py)
            browser = browser[:BROWSER_MAX_CHARS]
        ip = visitor_id = None
        country = ""
        if sender is not None:
            addr = ev.ip_address if sender.trusted and ev.ip_address else sender.ip
            known = memo.get((addr, ev.user_agent)) if memo is not None else None
            if known is None:
                # country: the address is not kept past this request
                known = (sender.visitor_id(addr, ev.user_agent), country_of(addr))
                if memo is not None:
                    memo[(addr, ev.user_agent)] = known
            visitor_id, country = known
            if sender.store_ip and addr:
                ip = addr
        # Positional, in COLUMNS order: a NamedTuple built by keyword was 8% of a batch's
        # worker time (tests/test_writer_isolation.py reads every column back).
        return _new_record((
            ev.id or uuid.uuid4(),                                  # id
            self.check_time(ev.time, now),                          # time
            page,                                                   # page
            ip,                                                     # ip_address
            ua,                                                     # user_agent
            strip_referrer(ev.referrer) if ev.referrer else "",     # referrer
            host,                                                   # referrer_host
            ev.session_id,                                          # session_id
            ev.duration if ev.duration is not None else 0,          # duration
            ev.description,                                         # description
            info.os, browser, info.device, info.is_bot,             # os, browser, device, is_bot
            visitor_id,                                             # visitor_id
            name, props, hostname,                                  # name, props, hostname
            utm_source, utm_medium, utm_campaign,                   # utm_*
            country,                                                # country
        ))
