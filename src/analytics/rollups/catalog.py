"""Which rollups exist: one place that both the write side (hooks, rebuild) and the read side
(the planner) consult.

Three kinds of rollup table, each for a *family* (a set of dimensions) at a few UTC grains:

- `agg`: events, sum and count of duration per (bucket, is_bot, dims). Summable.
- `dur`: a histogram of the integer duration per (bucket, is_bot, dims, duration): exact
  median / p95 by walking cumulative counts. Summable.
- `vis`: the same as `ses`, for unique visitors (events' `visitor_id`, rollups/sessions.py).
- `ses`: first-seen counts for exact unique sessions (human events only). A row
  (bucket, dims, prev, n) says: n sessions had an event with these dims in `bucket` and their
  previous bucket with such an event was `prev` (-infinity if none). Sessions distinct over
  [a, b) for any grain-aligned a, b = sum(n) over buckets in [a, b) with prev < a.

Families are narrow on purpose: one table with every dimension at 1 hour is about as large as
the raw events (measured: 3.9M rows for 10M events over 90 days), so each family carries the
dimensions a dashboard combines, at the grains where it stays >= ~10x smaller than raw.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import catalog

# API dimension name -> events column (declared in analytics/catalog.py)
DIMENSIONS: dict[str, str] = catalog.columns()

MINUTE, FIVE, QUARTER, HOUR, DAY = 60, 300, 900, 3600, 86400
GRAIN_LABELS = {MINUTE: "1m", FIVE: "5m", QUARTER: "15m", HOUR: "1h", DAY: "1d"}
SES_BASE = QUARTER  # session entries are kept at 15 minutes; session grains are multiples of it


@dataclass(frozen=True)
class Family:
    kind: str                 # 'agg' | 'dur' | 'ses' | 'vis'
    name: str
    dims: tuple[str, ...]     # API dimension names
    grains: tuple[int, ...]   # seconds, ascending; each divides the next
    # Also indexed by (page, bucket): a page filter (and the seed endpoint's default pages)
    # reads a few pages' rows instead of the whole bucket range.
    page_index: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(catalog.dimension(d).column for d in self.dims)

    def table(self, grain: int) -> str:
        return f"rollup_{self.kind}_{self.name}_{GRAIN_LABELS[grain]}"

    def tables(self) -> list[tuple[int, str]]:
        return [(g, self.table(g)) for g in self.grains]


FAMILIES: tuple[Family, ...] = (
    # additive
    # 5 minutes: the usual resolution of a 'last 24 hours' chart (288 rows instead of 1,440)
    Family("agg", "total", (), (MINUTE, FIVE, QUARTER, HOUR, DAY)),
    Family("agg", "tech", ("os", "browser", "device"), (QUARTER, HOUR, DAY)),
    Family("agg", "page", ("page",), (HOUR, DAY), page_index=True),
    Family("agg", "reftech", ("referrer", "os", "browser", "device"), (HOUR, DAY)),
    Family("agg", "pageos", ("page", "os"), (DAY,), page_index=True),
    Family("agg", "pagetech", ("page", "os", "browser", "device"), (DAY,)),
    Family("agg", "pageref", ("page", "referrer"), (DAY,)),
    Family("agg", "all", ("page", "os", "browser", "device", "referrer"), (DAY,)),
    # issue 11 part 1 (revision 0008): event names, sites, countries and campaigns. All six in one
    # family only by day: by hour it would be ~3x smaller than raw (simulated for a site of 10M
    # events / 90 days with 120 countries and 60 campaigns: bench/README.md); the narrow ones are
    # 30-170x smaller by hour.
    Family("agg", "evt", ("name", "hostname"), (HOUR, DAY)),
    Family("agg", "geo", ("country",), (HOUR, DAY)),
    Family("agg", "utm", ("utm_source", "utm_medium", "utm_campaign"), (HOUR, DAY)),
    Family("agg", "src", ("name", "hostname", "country", "utm_source", "utm_medium", "utm_campaign"), (DAY,)),
    # Revision 0012: the dashboard filtered by a page (its most used click). Without these its
    # country, event-name and UTM-source panels and its median time on page were raw scans of the
    # page's events (7.7 s for one page at 10M events over 30 days). By day only, indexed by page.
    # Two narrow families rather than page x all six of `src`: a key of page, name, hostname,
    # country and three UTM values at their byte caps would not fit a btree row (2,704 bytes;
    # ingestion/schemas.py), while page + name + country and page + utm_source do.
    Family("agg", "pagegeo", ("page", "country", "name"), (DAY,), page_index=True),
    Family("agg", "pageutm", ("page", "utm_source"), (DAY,)),  # ~1,400 rows a day: no page index needed
    # duration histograms (percentiles)
    Family("dur", "total", (), (HOUR, DAY)),
    # one row per distinct duration of a page and day: exact percentiles of a page
    Family("dur", "page", ("page",), (DAY,), page_index=True),
    # first-seen session counts (unique sessions)
    Family("ses", "total", (), (QUARTER, HOUR, DAY)),
    Family("ses", "page", ("page",), (HOUR, DAY)),
    # first-seen visitor counts (unique visitors: the same tables, keyed by the daily visitor_id)
    Family("vis", "total", (), (QUARTER, HOUR, DAY)),
    Family("vis", "page", ("page",), (HOUR, DAY)),
)


def families(kind: str) -> list[Family]:
    return [f for f in FAMILIES if f.kind == kind]
