"""Strict parsing of interval strings; nothing unparsed ever reaches SQL.

Accepted: one or more `<positive int> <unit>` terms (`15 minutes`, `1 day`, `1 hour 30 minutes`)
or a bare unit / short name (`hour`, `day`, `week`). Months and years cannot be mixed with
smaller units, because time_bucket cannot bucket by both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "second": ("seconds", 1), "sec": ("seconds", 1), "s": ("seconds", 1),
    "minute": ("seconds", 60), "min": ("seconds", 60), "m": ("seconds", 60),
    "hour": ("seconds", 3600), "hr": ("seconds", 3600), "h": ("seconds", 3600),
    "day": ("seconds", 86400), "d": ("seconds", 86400),
    "week": ("seconds", 7 * 86400), "w": ("seconds", 7 * 86400),
    "month": ("months", 1), "mon": ("months", 1),
    "year": ("months", 12), "yr": ("months", 12), "y": ("months", 12),
}
_SHORT_NAMES = {"minutely": "minute", "hourly": "hour", "daily": "day", "weekly": "week",
                "monthly": "month", "yearly": "year"}
_TERM = re.compile(r"(\d{1,6})\s*([a-z]+)", re.ASCII)  # ASCII digits only
_SPACE = " \t\n\r\f\v"  # what \s matches in an ASCII regex; str.strip() alone also strips Unicode spaces
MAX_LENGTH = 64


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" for c in word)


def _pattern() -> str:
    """The grammar parse_interval accepts, as a JSON Schema (ECMA 262) pattern: derived from the
    unit tables, so the documented syntax is the parsed one."""
    words = set(_UNITS) | {u + "s" for u in _UNITS}
    word = "(?:" + "|".join(_any_case(w) for w in sorted(words, key=lambda w: (-len(w), w))) + ")"
    short = "(?:" + "|".join(_any_case(w) for w in sorted(_SHORT_NAMES)) + ")"
    sp = "[ \\t\\n\\r\\f\\v]"
    term = f"[0-9]{{1,6}}{sp}*{word}"
    return f"^{sp}*(?:{short}|{word}|{term}(?:[ ,]*{term})*){sp}*$"


# Lengths, bounds and unit mixes are checked by parse_bounded (rules `interval_bounds`).
INTERVAL_PATTERN = _pattern()


@dataclass(frozen=True)
class Interval:
    seconds: int = 0   # fixed-length part
    months: int = 0    # calendar part

    @property
    def is_calendar(self) -> bool:
        return self.months > 0

    def approx_seconds(self) -> float:
        return self.seconds + self.months * 30.436875 * 86400

    def to_pg(self) -> str:
        """A canonical PostgreSQL interval literal, built from validated integers only."""
        if self.months:
            return f"{self.months} months"
        return f"{self.seconds} seconds"

    def __str__(self) -> str:
        if self.months:
            if self.months % 12 == 0:
                n = self.months // 12
                return f"{n} year" + ("s" if n != 1 else "")
            return f"{self.months} month" + ("s" if self.months != 1 else "")
        for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
            if self.seconds % size == 0:
                n = self.seconds // size
                return f"{n} {unit}" + ("s" if n != 1 else "")
        return f"{self.seconds} seconds"


class IntervalError(ValueError):
    """`rule`: 'interval_bounds' for a well-formed interval out of bounds (a rule the schema
    cannot state), 'interval_format' for text the schema's pattern refuses too."""

    def __init__(self, message: str, rule: str = "interval_format") -> None:
        super().__init__(message)
        self.rule = rule


def _unit(word: str) -> tuple[str, int]:
    w = word.lower()
    if w in _UNITS:
        return _UNITS[w]
    if w.endswith("s") and w[:-1] in _UNITS:
        return _UNITS[w[:-1]]
    raise IntervalError(f"unknown unit '{word[:20]}'; use seconds, minutes, hours, days, weeks, months or years")


def parse_interval(text: str | None) -> Interval:
    if text is None or not text.strip(_SPACE):
        raise IntervalError("must not be empty")
    if len(text) > MAX_LENGTH:
        raise IntervalError("is too long")
    if not text.isascii():  # lower() maps some non-ASCII letters to ASCII ones (K, the Kelvin sign)
        raise IntervalError("is not a valid interval such as '1 day' or '15 minutes'")
    s = text.strip(_SPACE).lower()
    s = _SHORT_NAMES.get(s, s)
    if re.fullmatch(r"[a-z]+", s):
        s = "1 " + s
    if s.startswith("-"):
        raise IntervalError("must be positive")
    pos, seconds, months = 0, 0, 0
    for m in _TERM.finditer(s):
        if s[pos:m.start()].strip(" ,"):
            raise IntervalError("is not a valid interval such as '1 day' or '15 minutes'")
        kind, size = _unit(m.group(2))
        n = int(m.group(1))
        if kind == "months":
            months += n * size
        else:
            seconds += n * size
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        raise IntervalError("is not a valid interval such as '1 day' or '15 minutes'")
    if months and seconds:
        raise IntervalError("cannot mix months or years with smaller units", "interval_bounds")
    if not months and not seconds:
        raise IntervalError("must be positive", "interval_bounds")
    return Interval(seconds=seconds, months=months)


def parse_bounded(text: str | None, *, min_seconds: int = 60, max_seconds: int = 366 * 86400) -> Interval:
    iv = parse_interval(text)
    if iv.approx_seconds() < min_seconds:
        raise IntervalError(f"must be at least {min_seconds // 60} minute(s)", "interval_bounds")
    if iv.approx_seconds() > max_seconds:
        raise IntervalError("must be at most 1 year", "interval_bounds")
    return iv
