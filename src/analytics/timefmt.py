"""ISO 8601 instants as the API accepts them, shared by the write and the read path: one pattern
that the OpenAPI schema states, and the parser that enforces exactly it."""
from __future__ import annotations

import re
from datetime import datetime

# What datetime.fromisoformat reads (Python 3.11): a date, optionally a time, and with a time
# optionally an offset ('Z' or +HH[:MM]).
ISO_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,6})?)?"
               r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$")
_ISO = re.compile(ISO_PATTERN)


class CalendarError(ValueError):
    """Not an ISO 8601 instant, or one that names no real date and time (month 13, hour 24)."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


def parse_instant(text: str) -> datetime:
    """`text` as a datetime (naive when it has no offset)."""
    if not _ISO.fullmatch(text):
        raise CalendarError("is not an ISO 8601 date and time", "datetime_parsing")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CalendarError("is not a real date and time", "calendar_date") from None
