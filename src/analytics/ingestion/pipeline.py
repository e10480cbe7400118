"""From a validated request body to the row that is stored: one small step at a time."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from .enrich import UserAgentCache, referrer_host
from .schemas import EventCreateSchema


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


COLUMNS = EventRecord._fields


class InvalidEvent(ValueError):
    """A value that passed the schema but not the service's rules (e.g. time out of window)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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
            raise InvalidEvent("time", "must not be in the future")
        if t < now - self.max_age:
            raise InvalidEvent("time", f"must not be older than {_describe(self.max_age)}")
        return t

    def to_record(self, ev: EventCreateSchema, now: datetime | None = None) -> EventRecord:
        now = now or datetime.now(timezone.utc)
        ua = ev.user_agent or ""
        info = self.ua_cache.lookup(ua)
        return EventRecord(
            id=ev.id or uuid.uuid4(),
            time=self.check_time(ev.time, now),
            page=ev.page,
            ip_address=ev.ip_address,
            user_agent=ua,
            referrer=ev.referrer or "",
            referrer_host=referrer_host(ev.referrer),
            session_id=ev.session_id,
            duration=ev.duration if ev.duration is not None else 0,
            description=ev.description,
            os=info.os,
            browser=info.browser,
            device=info.device,
            is_bot=info.is_bot,
        )
