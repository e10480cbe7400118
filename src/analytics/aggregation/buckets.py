"""Bucket edges in a time zone, computed once in Python and handed to SQL as an array.

SQL then places a row with `width_bucket(time, edges)`, so raw events and every rollup grain
use the very same boundaries, and zero-fill is a walk over the same list.

Semantics (what a reader of a dashboard expects):
- months / years: local midnight on the 1st; N-month buckets are aligned to January 2000
  (so 3 months are calendar quarters, 12 months calendar years).
- whole days: local midnight; N-day buckets aligned to Monday 2000-01-03, so a week starts on
  Monday. A local day lasts 23 or 25 hours across DST; a midnight skipped by a DST jump starts
  the day at the jump.
- intervals that divide a day (1 minute .. 12 hours): every instant at which the local wall
  clock reads a multiple of the interval since midnight. Each bucket lasts the interval in
  real time: a wall time repeated when clocks fall back is two edges, a skipped one none.
- any other fixed interval (e.g. 7 hours, 36 hours): fixed real-time buckets counted from
  local midnight of 2000-01-03.
"""
from __future__ import annotations

from bisect import bisect_right
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from .intervals import Interval

UTC = timezone.utc
_DAY = 86400
_ORIGIN_DATE = date(2000, 1, 3)  # a Monday, as time_bucket's default origin


class TooManyBuckets(ValueError):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.n = n


def local_midnight(d: date, tz: ZoneInfo) -> datetime:
    """The first instant of local date `d` (the DST jump itself if midnight does not exist)."""
    wall = datetime.combine(d, time(0))
    t = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if t.astimezone(tz).replace(tzinfo=None) == wall:
        return t
    # Midnight falls in a gap: find the smallest instant whose local time is >= midnight.
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # uses the later (larger) offset
    hi = t
    if lo > hi:
        lo, hi = hi, lo
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi_s = mid
        else:
            lo_s = mid + 1
    return datetime.fromtimestamp(lo_s, UTC)


def _wall_instants(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every instant at which the local clock reads `wall` (0, 1 or 2 of them)."""
    out = []
    for fold in (0, 1):
        t = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if t.astimezone(tz).replace(tzinfo=None) == wall and t not in out:
            out.append(t)
    return out


def _add_months(d: date, n: int) -> date:
    m = d.year * 12 + d.month - 1 + n
    return date(m // 12, m % 12 + 1, 1)


def estimate_count(start: datetime, end: datetime, iv: Interval) -> int:
    return int((end - start).total_seconds() // iv.approx_seconds()) + 2


# A dashboard asks many questions over the same range and interval (every filter or grouping
# it redraws): the grids are kept, a few of them (at most 16 x 10,000 edges by default).
_GRID_MEMO = 16


@lru_cache(maxsize=_GRID_MEMO)
def edges(start: datetime, end: datetime, iv: Interval, tz: ZoneInfo, max_buckets: int) -> tuple[datetime, ...]:
    """Lower bounds e0 <= start < e1 < ... < e(n-1) < end of the buckets covering [start, end).

    Raises TooManyBuckets when there would be more than `max_buckets` of them.
    """
    if estimate_count(start, end, iv) > max_buckets + 3:
        raise TooManyBuckets(estimate_count(start, end, iv))
    first_day = start.astimezone(tz).date() - timedelta(days=1)
    last_day = end.astimezone(tz).date() + timedelta(days=1)
    lo, hi = _ts(start), _ts(end)
    cands: list[int] = []  # epoch seconds
    if iv.months:
        m0 = first_day.year * 12 + first_day.month - 1 - 2000 * 12
        d = _add_months(date(2000, 1, 1), (m0 // iv.months) * iv.months)
        while d <= last_day:
            cands.append(_ts(local_midnight(d, tz)))
            d = _add_months(d, iv.months)
    elif iv.seconds % _DAY == 0:
        n = iv.seconds // _DAY
        d = first_day - timedelta(days=(first_day - _ORIGIN_DATE).days % n)
        while d <= last_day:
            cands.append(_ts(local_midnight(d, tz)))
            d += timedelta(days=n)
    elif _DAY % iv.seconds == 0:
        step, per_day = iv.seconds, _DAY // iv.seconds
        d = first_day
        m0 = local_midnight(d, tz)
        while d <= last_day:
            m1 = local_midnight(d + timedelta(days=1), tz)
            a, b = _ts(m0), _ts(m1)
            if b >= lo and a < hi:
                off_a, off_b = _offset(a, tz), _offset(b - 1, tz)
                if off_a == off_b and b - a == _DAY:
                    cands.extend(range(a, b, step))  # no DST change that day
                elif off_a != off_b:
                    # One change at instant j: before it the wall clock is t + off_a, after t + off_b.
                    j = _change_instant(a, b - 1, tz)
                    cands.extend(range(a, j, step))
                    first = j + (-(j + off_b)) % step
                    cands.extend(range(first, b, step))
                else:
                    cands.append(a)
                    wall = datetime.combine(d, time(0))
                    for k in range(1, per_day):
                        cands.extend(_ts(t) for t in _wall_instants(wall + timedelta(seconds=k * step), tz))
            d, m0 = d + timedelta(days=1), m1
    else:
        origin = _ts(local_midnight(_ORIGIN_DATE, tz))
        k0 = (lo - origin) // iv.seconds
        cands.extend(range(origin + k0 * iv.seconds, hi, iv.seconds))
    cands = sorted(set(cands))
    i = bisect_right(cands, lo)  # cands[:i] <= start
    out = ([cands[i - 1]] if i else [lo]) + [c for c in cands[i:] if c < hi]
    if len(out) > max_buckets:
        raise TooManyBuckets(len(out))
    return tuple(datetime.fromtimestamp(c, UTC) for c in out)


def _offset(t: int, tz: ZoneInfo) -> int:
    return int(datetime.fromtimestamp(t, tz).utcoffset().total_seconds())


def _change_instant(a: int, b: int, tz: ZoneInfo) -> int:
    """The first second in (a, b] whose UTC offset differs from the one at a."""
    off = _offset(a, tz)
    while a + 1 < b:
        mid = (a + b) // 2
        if _offset(mid, tz) == off:
            a = mid
        else:
            b = mid
    return b


def _ts(t: datetime) -> int:
    return int(t.timestamp())


@lru_cache(maxsize=_GRID_MEMO)
def labels_literal(edges: tuple[datetime, ...], tz: ZoneInfo) -> str:
    """The edges as a PostgreSQL array literal of ISO 8601 instants with the zone's offsets
    (no element needs quoting). Sent as timestamptz[] (the edges) and text[] (the labels)."""
    return "{" + ",".join(iso(t, tz) for t in edges) + "}"


def iso(t: datetime, tz: ZoneInfo) -> str:
    """ISO 8601 with the zone's offset at that instant (Z is never used, +00:00 is)."""
    return t.astimezone(tz).isoformat()
