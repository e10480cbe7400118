"""The query model: request parameters, checked once, resolved into a StatsQuery.

Nothing downstream re-validates: the planner and the SQL builders trust this object. Every
rejection is a 422 naming the parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import catalog
from ..web.errors import validation_error
from .buckets import TooManyBuckets, edges
from .intervals import Interval, IntervalError, parse_bounded
from ..timefmt import CalendarError, parse_instant
from .params import zone_set

Kind = Literal["timeseries", "breakdown", "totals"]
# The names the API takes: derived from the catalog (analytics/catalog.py), listed nowhere else.
DIMENSIONS: tuple[str, ...] = catalog.dimension_names()
FILTERS: tuple[str, ...] = catalog.filter_names()
Metric = Literal[catalog.metric_names()]  # type: ignore[valid-type]
Dimension = Literal[DIMENSIONS]  # type: ignore[valid-type]
DEFAULT_RANGE = timedelta(days=30)
MAX_FILTER_VALUES = 100
DEFAULT_GROUPS = 10          # breakdown rows, and series of a grouped timeseries, unless `limit`
MAX_SERIES_ROWS = 200_000    # buckets x groups of one timeseries answer
MAX_VALUE_LENGTH = 2048
# The instants a question may name. Python's datetime ends at years 1 and 9999, and bucket
# edges, default ranges and `compare=previous` reach past the instants asked for (a year, a
# period): far inside those ends, every derived instant exists, and no analytics data is older
# than 1900 or newer than 9000.
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=timezone.utc)
MAX_INSTANT = datetime(9000, 1, 1, tzinfo=timezone.utc)
_RANGE_MSG = f"must be between {MIN_INSTANT:%Y-%m-%dT%H:%M:%SZ} and {MAX_INSTANT:%Y-%m-%dT%H:%M:%SZ}"
# Closed sets: a filter value in any letter case means the stored spelling.
_CANON = {d.name: {v.lower(): v for v in d.values} for d in catalog.DIMENSIONS if d.values}


@dataclass(frozen=True)
class Filters:
    values: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (filter name, values), non-empty only
    include_bots: bool = False

    def get(self, name: str) -> tuple[str, ...]:
        return dict(self.values).get(name, ())

    def dimensions(self) -> set[str]:
        """Dimensions the filters read (page_prefix reads page)."""
        return {catalog.filter_dimension(n).name for n, _ in self.values}

    def as_dict(self) -> dict:
        return {**{n: list(v) for n, v in self.values}, "include_bots": self.include_bots}


@dataclass(frozen=True)
class StatsQuery:
    kind: Kind
    start: datetime
    end: datetime
    tz_name: str
    interval: Interval | None
    group_by: tuple[str, ...]
    metrics: tuple[str, ...]
    filters: Filters
    order_by: str
    descending: bool
    limit: int | None
    offset: int
    compare: str | None = None
    force_raw: bool = False
    edges: tuple[datetime, ...] = field(default=(), compare=False, repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.tz_name)

    def cache_key(self) -> tuple:
        return (self.kind, self.start, self.end, self.tz_name, self.interval, self.group_by, self.metrics,
                self.filters, self.order_by, self.descending, self.limit, self.offset, self.compare,
                self.force_raw)


def _zone(name: str) -> ZoneInfo:
    if not name or len(name) > 64 or name not in zone_set():
        raise validation_error("timezone", "must be an IANA time zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise validation_error("timezone", f"unknown time zone '{name[:64]}'") from None


def _instant(name: str, text: str | datetime, tz: ZoneInfo) -> datetime:
    """Aware datetimes are instants; a naive one is read as wall time in the query's zone."""
    if isinstance(text, datetime):
        t = text
    else:
        try:
            t = parse_instant(text)
        except CalendarError as exc:
            raise validation_error(name, str(exc), rule=exc.rule) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    try:
        t = t.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise validation_error(name, _RANGE_MSG, rule="date_range") from None
    if not MIN_INSTANT <= t <= MAX_INSTANT:
        raise validation_error(name, _RANGE_MSG, rule="date_range")
    return t


def default_end(now: datetime) -> datetime:
    # The next quarter hour: an aligned default lets the 15-minute rollups answer it.
    q = 900
    ts = int(now.timestamp())
    return datetime.fromtimestamp(-(-ts // q) * q, timezone.utc)


# --- issue 11 part 1: prop:<key> (group_by) and prop=<key>:<value> (filter) ---
MAX_PROP_KEY_BYTES = 300  # what ingest accepts (ingestion/fields.py)
MAX_PROP_VALUE_BYTES = 2000


def _prop_key(param: str, key: str) -> str:
    """A property key as ingest accepts it: 1..300 bytes of UTF-8, no control characters."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise validation_error(param, "the property key must be valid Unicode text") from None
    if not 0 < size <= MAX_PROP_KEY_BYTES:
        raise validation_error(param, f"the property key must be 1 to {MAX_PROP_KEY_BYTES} bytes of UTF-8",
                               rule="prop_value")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise validation_error(param, "the property key must not contain control characters", rule="prop_value")
    return key


def _group_by(names: list[str]) -> tuple[str, ...]:
    for n in names:
        if catalog.is_prop(n):
            _prop_key("group_by", n[len(catalog.PROP_PREFIX):])
        elif n not in DIMENSIONS:
            raise validation_error("group_by", f"'{n[:40]}' is not one of {', '.join(DIMENSIONS)} or "
                                               "prop:<key>")
    return tuple(dict.fromkeys(names))


def _prop_filters(values: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """prop=<key>:<value> (repeatable; values of one key OR-ed, keys AND-ed), as filters named
    prop:<key>. The key ends at the first ':'; the value may be '' (events without the key)."""
    if len(values) > MAX_FILTER_VALUES:
        raise validation_error(catalog.PROP_FILTER, f"at most {MAX_FILTER_VALUES} values")
    by_key: dict[str, list[str]] = {}
    for v in values:
        key, sep, value = v.partition(":")
        if not sep:
            raise validation_error(catalog.PROP_FILTER, "must be <key>:<value>, e.g. prop=plan:pro", rule="prop_value")
        _prop_key(catalog.PROP_FILTER, key)
        if "\x00" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_PROP_VALUE_BYTES:
            raise validation_error(catalog.PROP_FILTER, f"the value must be at most {MAX_PROP_VALUE_BYTES} bytes, "
                                                        "without NUL characters")
        if value not in by_key.setdefault(key, []):
            by_key[key].append(value)
    return [(catalog.PROP_PREFIX + k, tuple(sorted(v))) for k, v in sorted(by_key.items())]
# --- end issue 11 part 1 ---


def _filters(raw: dict[str, list[str]], include_bots: bool) -> Filters:
    out = []
    for name in FILTERS:
        vals = raw.get(name)
        if not vals:
            continue
        dim = catalog.filter_dimension(name)
        if len(vals) > MAX_FILTER_VALUES:
            raise validation_error(name, f"at most {MAX_FILTER_VALUES} values")
        clean = []
        for v in vals:
            if len(v) > MAX_VALUE_LENGTH:
                raise validation_error(name, f"a value is longer than {MAX_VALUE_LENGTH} characters")
            if "\x00" in v:
                raise validation_error(name, "must not contain NUL characters")
            if name in _CANON:
                canon = _CANON[name].get(v.lower())
                if canon is None:
                    raise validation_error(name, f"'{v[:40]}' is not one of {', '.join(_CANON[name].values())}")
                v = canon
            elif v == "" and not (name == dim.name and dim.allow_empty):
                raise validation_error(name, "must not be empty")
            if v not in clean:
                clean.append(v)
        if clean:
            out.append((name, tuple(sorted(clean))))
    out += _prop_filters(raw.get(catalog.PROP_FILTER) or [])
    return Filters(tuple(out), include_bots)


def _check_visit_dimensions(groups: tuple[str, ...], mets: tuple[str, ...], flt: Filters) -> None:
    """Visit metrics read the `visits` table (rollups/visits.py): they group by what a visit row
    carries (entry and exit pages, the first event's os/browser/device/referrer). Any filter
    applies: those on a visit's own columns read them, the others keep the visits that include
    a matching event (builder.visit); such visits are counted on their own, not beside event
    metrics whose rows they would not line up with. Entry and exit pages belong to visits only."""
    visit_mets = [m for m in mets if catalog.metric(m).kind == "visit"]
    only = set(catalog.VISIT_ONLY_DIMENSIONS)
    other = [m for m in mets if catalog.metric(m).kind != "visit"]
    if visit_mets:
        allowed = ", ".join(catalog.VISIT_DIMENSIONS)
        for d in groups:
            if d not in catalog.VISIT_DIMENSIONS:
                raise validation_error("group_by", f"'{d}' cannot be combined with visit metrics "
                                       f"({', '.join(visit_mets)}): they group by {allowed}", rule="visit_dimension")
        by_event = [f for f, _ in flt.values if not catalog.visit_column_filter(f)]
        if by_event and other:
            name = by_event[0] if not catalog.is_prop(by_event[0]) else catalog.PROP_FILTER
            raise validation_error(name, f"with this filter, visit metrics ({', '.join(visit_mets)}) count the "
                                         "visits that include a matching event: ask them without "
                                         f"{', '.join(other)} (a request of their own)", rule="visit_dimension")
    used = (set(groups) | flt.dimensions()) & only
    if used and other:
        raise validation_error("metrics", f"{', '.join(sorted(used))} belong to visits: only visit metrics "
                               f"({', '.join(m.name for m in catalog.metrics_of('visit'))}) can be asked with "
                               f"them, not {', '.join(other)}", rule="visit_dimension")


def _order(order_by: str | None, metrics: tuple[str, ...]) -> tuple[str, bool]:
    if order_by is None:
        return metrics[0], True
    name, sep, direction = order_by.partition(":")
    if name not in metrics:
        raise validation_error("order_by", f"must be one of the requested metrics: {', '.join(metrics)} "
                                           "(optionally followed by ':asc' or ':desc')", rule="requested_metric")
    if sep and direction not in ("asc", "desc"):
        raise validation_error("order_by", "direction must be ':asc' or ':desc'")
    return name, direction != "asc"


def build_query(kind: Kind, *, interval: str | None, start: str | datetime | None, end: str | datetime | None,
                timezone_name: str, group_by: list[str], metrics: list[str], filters: dict[str, list[str]],
                include_bots: bool, order_by: str | None, limit: int | None, offset: int,
                compare: str | None, source: str, max_buckets: int, now: datetime | None = None) -> StatsQuery:
    tz = _zone(timezone_name)
    now = now or datetime.now(timezone.utc)
    s = _instant("start", start, tz) if start is not None else None
    e = _instant("end", end, tz) if end is not None else None
    if e is None:
        e = default_end(now) if s is None or s < default_end(now) else s + DEFAULT_RANGE
    if s is None:
        s = e - DEFAULT_RANGE
    if e <= s:
        raise validation_error("end", "must be after start", rule="range_order")
    iv = None
    if kind == "timeseries" or interval is not None:
        try:
            iv = parse_bounded(interval if interval is not None else "1 day")
        except IntervalError as exc:
            raise validation_error("interval", f"interval {exc}", rule=exc.rule) from None
    groups = _group_by(group_by)
    mets = tuple(dict.fromkeys(metrics)) or ("events",)
    if kind == "breakdown" and not groups:
        raise validation_error("group_by", "breakdown needs at least one group_by dimension")
    if compare is not None and kind != "totals":
        raise validation_error("compare", "compare is available on /totals")
    if compare == "previous" and s - (e - s) < MIN_INSTANT:
        raise validation_error("compare", f"the previous period would start before {MIN_INSTANT:%Y-%m-%d}; "
                                          "ask for a later start or a shorter range", rule="date_range")
    flt = _filters(filters, include_bots)
    _check_visit_dimensions(groups, mets, flt)
    name, desc = _order(order_by, mets)
    if limit is None and (kind == "breakdown" or kind == "timeseries" and groups):
        limit = DEFAULT_GROUPS
    if (limit is not None or offset) and not groups:
        raise validation_error("limit" if limit is not None else "offset",
                               "limit and offset page through groups; add group_by", rule="needs_group_by")
    bucket_edges: tuple[datetime, ...] = ()
    if kind == "timeseries":
        try:
            bucket_edges = tuple(edges(s, e, iv, tz, max_buckets))
        except TooManyBuckets as exc:
            raise validation_error("interval", f"the range would have about {exc.n} buckets of {iv}; "
                                               f"at most {max_buckets} are allowed",
                                   rule="too_many_buckets") from None
    return StatsQuery(kind=kind, start=s, end=e, tz_name=timezone_name, interval=iv if kind == "timeseries" else None,
                      group_by=groups, metrics=mets, filters=flt,
                      order_by=name, descending=desc, limit=limit, offset=offset, compare=compare,
                      force_raw=(source == "raw"), edges=bucket_edges)
