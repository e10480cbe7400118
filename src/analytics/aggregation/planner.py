"""The one place that decides, per query, which source answers each metric exactly.

Metrics fall in three kinds, each with its own rollup kind (see rollups.catalog):
- agg (events, avg_duration) and dur (median, p95): summable, so the range is cut into
  pieces: the coarsest usable grain in the middle, finer grains towards the edges, raw events
  for slivers shorter than the finest grain. A grain is usable when it divides every interior
  bucket edge of the query (in epoch seconds; all grains are UTC-aligned).
- ses (unique_sessions) and vis (unique_visitors, the same tables keyed by visitor_id): first-seen counts are exact only for a range whose ends fall on the
  table's grain and a family whose dimensions are exactly the query's (group_by plus
  single-valued filters), human events only. Otherwise: raw events.
Among families that fit, the planner takes the one with the fewest rows to read.

Retention (analytics.retention): raw events before the raw horizon are gone, so a plan never
reads raw events there: it takes a family whose pieces cover that part from rollups, or the
question is refused (BeyondHorizon, a 422). Nothing is kept before the rollup horizon: a
question starting there is refused. The horizons come with the ready tables (ReadyTables).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache, reduce
from math import gcd

from .. import catalog
from ..retention.state import NO_HORIZONS, Horizons
from ..rollups.catalog import Family, families
from ..rollups.visits import TABLE as VISITS_TABLE, rollup_for
from .intervals import Interval
from .query import StatsQuery

KIND_OF_METRIC = catalog.kind_of_metric()  # metric -> the rollup kind answering it
# Rough rows per bucket of a family (measured on the benchmark data: 1 for totals, ~600 pages
# a day ...); only their order matters. Raw events cost one row each.
# (Keyed by family name; unknown families count as 1000.)
_WIDTH = {"total": 1, "tech": 40, "page": 600, "reftech": 150, "pageos": 2200, "pagetech": 5000,
          "pageref": 3000, "all": 11000,
          "evt": 8, "geo": 60, "utm": 25, "src": 1500,
          "pagegeo": 7500, "pageutm": 1400}
RAW_ROWS_PER_SECOND = 1.3  # ~10M events / 90 days; only used to compare a raw sliver with a rollup


class ReadyTables(frozenset):
    """The rollup tables that are complete, with the horizons before which data is gone: both
    read in one statement and cached together (aggregation.service.ReadyRollups)."""

    horizons: Horizons = NO_HORIZONS

    def __new__(cls, names=(), horizons: Horizons = NO_HORIZONS):
        obj = super().__new__(cls, names)
        obj.horizons = horizons
        return obj


class BeyondHorizon(Exception):
    """The question needs data older than a retention horizon (the service's 422)."""

    def __init__(self, horizon: datetime, raw: bool) -> None:
        at = horizon.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        if raw:
            msg = (f"this question needs raw events from before {at}, the raw retention horizon (older "
                   "events were dropped, RETENTION_DAYS): start at or after it, or ask what the rollups "
                   "answer (a range and interval of whole hours or days, one value per filter; "
                   "unique_sessions without include_bots)")
        else:
            msg = (f"nothing is kept from before {at}, the rollup retention horizon "
                   "(ROLLUP_RETENTION_DAYS): start at or after it")
        super().__init__(msg)
        self.horizon, self.raw = horizon, raw


def _horizons(ready) -> Horizons:
    return getattr(ready, "horizons", NO_HORIZONS)


@dataclass(frozen=True)
class Piece:
    table: str | None       # None: the raw events
    lo: datetime
    hi: datetime


@dataclass(frozen=True)
class Source:
    kind: str               # agg | dur | ses | vis
    family: Family | None   # None when everything is raw
    pieces: tuple[Piece, ...]

    @property
    def label(self) -> str:
        names = []
        for p in self.pieces:
            n = p.table or "raw"
            if n not in names:
                names.append(n)
        return "+".join(names)


@dataclass(frozen=True)
class Plan:
    agg: Source | None      # None only when every metric asked is a visit metric
    dur: Source | None
    ses: Source | None
    vis: Source | None = None
    visit: Source | None = None

    def sources(self) -> dict[str, Source]:
        """The first one drives the answer's rows (the builder joins the others to it)."""
        return {k: s for k, s in (("agg", self.agg), ("visit", self.visit), ("dur", self.dur),
                                  ("ses", self.ses), ("vis", self.vis)) if s}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000


def _us(t: datetime) -> int:
    """Exact integer microseconds since the epoch (floats would round)."""
    return (t - _EPOCH) // timedelta(microseconds=1)


def _at(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@lru_cache(maxsize=64)
def _alignment(instants: tuple[datetime, ...]) -> int:
    """The gcd of the instants' epoch microseconds: a grain divides every instant exactly when it
    divides this (0 when there are none). One pass, instead of one per candidate table."""
    return reduce(gcd, (_us(t) for t in instants), 0)


def _divides(grain: int, alignment: int) -> bool:
    return alignment % (grain * _US) == 0


def _raw(kind: str, q: StatsQuery, horizon: datetime | None = None) -> Source:
    """The whole range from raw events; refused when part of it is before the raw horizon."""
    if horizon is not None and q.start < horizon:
        raise BeyondHorizon(horizon, raw=True)
    return Source(kind, None, (Piece(None, q.start, q.end),))


def _cover(lo: int, hi: int, grains: list[tuple[int, str]]) -> list[tuple[str | None, int, int]]:
    """Cut [lo, hi) into whole buckets of the coarsest grain, finer grains at the ends, raw slivers."""
    if lo >= hi:
        return []
    if not grains:
        return [(None, lo, hi)]
    g, table = grains[-1][0] * _US, grains[-1][1]
    a, b = -(-lo // g) * g, (hi // g) * g
    if a >= b:
        return _cover(lo, hi, grains[:-1])
    return _cover(lo, a, grains[:-1]) + [(table, a, b)] + _cover(b, hi, grains[:-1])


def _cost(pieces, fam: Family, grains: dict[str, int]) -> float:
    total = 0.0
    for table, lo, hi in pieces:
        if table is None:
            total += (hi - lo) / _US * RAW_ROWS_PER_SECOND
        else:
            total += (hi - lo) / _US / grains[table] * _WIDTH.get(fam.name, 1000) + 50  # + per piece
    return total


def _summable(kind: str, q: StatsQuery, ready: set[str]) -> Source:
    horizon = _horizons(ready).raw
    if q.force_raw:
        return _raw(kind, q, horizon)
    gone = None if horizon is None else _us(horizon)
    needed = set(q.group_by) | q.filters.dimensions()
    interior = _alignment(q.edges[1:])
    best = None
    for fam in families(kind):
        if not needed <= set(fam.dims):
            continue
        grains = [(g, t) for g, t in fam.tables() if t in ready and _divides(g, interior)]
        if not grains:
            continue
        pieces = _cover(_us(q.start), _us(q.end), grains)
        if gone is not None and any(t is None and lo < gone for t, lo, _ in pieces):
            continue  # a raw sliver where raw events were dropped
        cost = _cost(pieces, fam, {t: g for g, t in grains})
        if best is None or cost < best[0]:
            best = (cost, fam, pieces)
    if best is None:
        return _raw(kind, q, horizon)
    _, fam, pieces = best
    return Source(kind, fam, tuple(
        Piece(t, _at(lo), _at(hi)) for t, lo, hi in pieces))


def _sessions(q: StatsQuery, ready: set[str], kind: str = "ses") -> Source:
    """Distinct sessions (kind 'ses') or visitors ('vis') from first-seen tables, else raw."""
    horizon = _horizons(ready).raw
    if q.force_raw or q.filters.include_bots:
        return _raw(kind, q, horizon)
    dims = set(q.group_by)
    for name, values in q.filters.values:
        dim = catalog.filter_dimension(name).name
        if dim in q.group_by:
            continue
        if len(values) != 1 or name != dim:
            return _raw(kind, q, horizon)  # one session counted once across several values: not summable
        dims.add(dim)
    bounds = _alignment((q.start, q.end, *q.edges[1:]))
    for fam in families(kind):
        if set(fam.dims) != dims:
            continue
        for g, table in reversed(fam.tables()):
            if table in ready and _divides(g, bounds):
                return Source(kind, fam, (Piece(table, q.start, q.end),))
    return _raw(kind, q, horizon)


def _visits(q: StatsQuery, ready: set[str]) -> Source:
    """The visits table; with a filter a visit row does not carry (page, name, ...), also the raw
    events that say which visits include a matching event (a raw piece: it counts as a raw read,
    and is refused where retention dropped those events)."""
    from_rollup = all(catalog.metric(m).rollup for m in q.metrics if KIND_OF_METRIC[m] == "visit")
    rollup = rollup_for(q.group_by) if not q.filters.values and from_rollup else None
    if rollup is not None and rollup[0] in ready and _divides(rollup[1], _alignment((q.start, q.end, *q.edges[1:]))):
        return Source("visit", None, (Piece(rollup[0], q.start, q.end),))
    pieces = [Piece(VISITS_TABLE, q.start, q.end)]
    if any(not catalog.visit_column_filter(f) for f, _ in q.filters.values):
        horizon = _horizons(ready).raw
        if horizon is not None and q.start < horizon:
            raise BeyondHorizon(horizon, raw=True)
        pieces.append(Piece(None, q.start, q.end))
    return Source("visit", None, tuple(pieces))


def plan(q: StatsQuery, ready: set[str]) -> Plan:
    """Raises BeyondHorizon when the question needs data that retention dropped."""
    rollup_horizon = _horizons(ready).rollup
    if rollup_horizon is not None and q.start < rollup_horizon:
        raise BeyondHorizon(rollup_horizon, raw=False)
    kinds = {KIND_OF_METRIC[m] for m in q.metrics}
    # Visits (rollups/visits.py): one row per visit, read directly, counted where it started.
    # Every visit's first event is a human event in the same bucket with the same os, browser,
    # device and referrer, so the agg rows, when asked too, hold every group visits have.
    visit = _visits(q, ready) if "visit" in kinds else None
    return Plan(agg=_summable("agg", q, ready) if kinds != {"visit"} else None,
                dur=_summable("dur", q, ready) if "dur" in kinds else None,
                ses=_sessions(q, ready) if "ses" in kinds else None,
                vis=_sessions(q, ready, "vis") if "vis" in kinds else None,
                visit=visit)


def seed_table(width: Interval, ready: set[str]) -> str | None:
    """The rollup that answers seed 004's `time_bucket(width, time)` by page and os exactly, if any.
    (None means raw events: the seed reader refuses that once a raw horizon exists.)"""
    best = None
    for fam in families("agg"):
        if not {"page", "os"} <= set(fam.dims):
            continue
        for g, table in fam.tables():
            fits = (86400 % g == 0) if width.months else (width.seconds % g == 0)
            if table in ready and fits:
                cost = _WIDTH.get(fam.name, 1000) / g
                if best is None or cost < best[0]:
                    best = (cost, table)
    return best[1] if best else None
