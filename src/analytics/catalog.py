"""The catalog of the read API: every dimension and every metric, declared once.

Everything that lists dimensions or metrics is derived from here, never written out again:
- the query model's allowed names and filters (aggregation/query.py),
- the request parameters and their OpenAPI types (aggregation/params.py, aggregation/router.py:
  `group_by`, `metrics`, `order_by`, one filter parameter per dimension, the response row),
- the planner's metric -> rollup kind table (aggregation/planner.py),
- the SQL builder's column and metric expressions (aggregation/builder.py),
- the rollup tables' dimension columns (rollups/catalog.py: families name dimensions by API
  name; rollups/ddl.py and rollups/maintain.py write their columns from this catalog).

Adding a dimension: one `Dimension` here, plus its derivation at ingest (a column of `events`
filled by ingestion/, and a migration adding the column). List it in a rollup family
(rollups/catalog.py) only if a rollup should carry it (that is DDL: a new migration).
Adding a metric over existing rollups: one `Metric` here.
tests/test_catalog.py holds every listing to this catalog.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .ingestion.enrich import DEVICES, OS_NAMES


@dataclass(frozen=True)
class Dimension:
    name: str                       # API name: group_by value, filter parameter, output key
    column: str                     # the events (and rollup) column holding it
    derived: str                    # how ingest fills the column (where to look)
    description: str                # the filter parameter's OpenAPI description
    values: tuple[str, ...] = ()    # a closed set (OpenAPI enum; filters match any letter case)
    allow_empty: bool = False       # '' is a meaningful filter value (e.g. referrer: direct)
    prefix_filter: str = ""         # description of a `<name>_prefix` filter ('' = none)
    zero: str = ""                  # the value stored when ingest knows nothing

    @property
    def filters(self) -> tuple[str, ...]:
        """The filter parameters reading this dimension."""
        return (self.name, f"{self.name}_prefix") if self.prefix_filter else (self.name,)


@dataclass(frozen=True)
class Partial:
    """A summable value column of the `agg` rollups: its SQL over raw events, and how rows
    of it merge (rollup to coarser rollup, pieces of a plan)."""
    name: str
    raw: str                        # over events rows
    merge: str                      # over rows that carry this column
    sql_type: str = "bigint"


@dataclass(frozen=True)
class Metric:
    name: str                       # API name: `metrics` value, `order_by`, output key
    kind: str                       # the rollup kind answering it: agg | dur | ses | vis
    raw: str                        # its SQL over raw events (one group of rows); for dur, what the
                                    # histogram walk equals (the builder reads raw events as one too)
    merged: str = ""                # agg: its SQL over rows of Partial columns (rollup or pieces)
    fraction: str = ""              # dur: the percentile, as an SQL number
    key: str = ""                   # ses/vis: the events column counted distinct
    rollup: str = ""                # visit: its SQL over rows of a visit rollup (rollups/visits.py;
                                    # '' when those cannot give it)
    zero: int | None = None         # the value of a bucket or group with no events (None: null)
    json_type: type = int           # the JSON/OpenAPI type

    @property
    def zero_filled(self) -> bool:
        return self.zero is not None


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("page", "page", "the event's `page` as sent (ingestion/schemas.py)",
              "Exact page; repeatable (OR)", prefix_filter="Page prefix; repeatable (OR)"),
    Dimension("os", "os", "from the User-Agent: ingestion/enrich.py classify()",
              "Operating system; repeatable (OR)", values=OS_NAMES, zero="Other"),
    Dimension("browser", "browser", "from the User-Agent: ingestion/enrich.py classify()",
              "Browser family; repeatable (OR)", zero="Other"),
    Dimension("device", "device", "from the User-Agent: ingestion/enrich.py classify()",
              "Device; repeatable (OR)", values=DEVICES, zero="other"),
    Dimension("referrer", "referrer_host", "from the referrer URL: ingestion/enrich.py referrer_host()",
              "Referrer host without www. ('' = direct)", allow_empty=True),
    # --- issue 11 part 1: what happened and where (ingestion/fields.py, ingestion/geo.py) ---
    Dimension("name", "name", "the event's `name` (default 'pageview'): ingestion/fields.py check_name()",
              "Event name ('pageview' or a custom event's); repeatable (OR)", zero="pageview"),
    Dimension("hostname", "hostname", "from the body's `url`: ingestion/fields.py locate()",
              "Host name of the page, lower case without port ('' = not sent); repeatable (OR)",
              allow_empty=True),
    Dimension("country", "country", "from the client address at ingest: ingestion/geo.py country_of()",
              "ISO 3166-1 alpha-2 country code, upper case ('' = unknown); repeatable (OR)",
              allow_empty=True),
    Dimension("utm_source", "utm_source", "from the page URL's query: ingestion/fields.py locate()",
              "utm_source of the landing URL ('' = none); repeatable (OR)", allow_empty=True),
    Dimension("utm_medium", "utm_medium", "from the page URL's query: ingestion/fields.py locate()",
              "utm_medium of the landing URL ('' = none); repeatable (OR)", allow_empty=True),
    Dimension("utm_campaign", "utm_campaign", "from the page URL's query: ingestion/fields.py locate()",
              "utm_campaign of the landing URL ('' = none); repeatable (OR)", allow_empty=True),
    # --- end issue 11 part 1 ---
)

# The value columns of every `agg` rollup (its DDL, its maintenance, the planner's pieces).
AGG_PARTIALS: tuple[Partial, ...] = (
    Partial("events", "count(*)", "sum(events)"),
    Partial("dur_sum", "coalesce(sum(duration), 0)", "sum(dur_sum)"),
    Partial("dur_n", "count(duration)", "sum(dur_n)"),
    # issue 11 part 1: events that are not pageviews. Added by revision 0008 with default 0 to
    # every agg table (the rows stored before were all pageviews): no row is rewritten.
    Partial("custom", "count(*) FILTER (WHERE name <> 'pageview')", "sum(custom)", "bigint DEFAULT 0"),
)

METRICS: tuple[Metric, ...] = (
    Metric("events", "agg", "count(*)", merged="sum(events)::bigint", zero=0),
    Metric("unique_sessions", "ses", "count(DISTINCT session_id)", key="session_id", zero=0),
    Metric("unique_visitors", "vis", "count(DISTINCT visitor_id)", key="visitor_id", zero=0),
    # exact integer sums divided in float8: identical whichever source summed them
    Metric("avg_duration", "agg", "sum(duration)::float8 / nullif(count(duration), 0)",
           merged="sum(dur_sum)::float8 / nullif(sum(dur_n), 0)", json_type=float),
    Metric("median_duration", "dur", "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration)",
           fraction="0.5", json_type=float),
    Metric("p95_duration", "dur", "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration)",
           fraction="0.95", json_type=float),
    # issue 11 part 1: events named 'pageview' (= events - custom over the agg rollups)
    Metric("pageviews", "agg", "count(*) FILTER (WHERE name = 'pageview')",
           merged="(sum(events) - sum(custom))::bigint", zero=0),
)

KINDS = ("agg", "dur", "ses", "vis", "visit")

# --- visits (issue 11 part 2; rollups/visits.py) ------------------------------------------------
# A visit is a visitor's run of human events with no gap longer than VISIT_TIMEOUT_MINUTES; the
# `visits` table holds one row per visit, maintained at ingest. Visit metrics are kind "visit"
# (their `raw` SQL is over rows of `visits`); a visit counts in the bucket where it started.
# Dimensions a visit carries: its entry and exit pages (visit-only: no events column), and the
# os/browser/device/referrer of its first event (the same column names as events).
DIMENSIONS += (
    Dimension("entry_page", "entry_page", "the page of the visit's first pageview (rollups/visits.py)",
              "Entry page of the visit (visit metrics only); repeatable (OR)"),
    Dimension("exit_page", "exit_page", "the page of the visit's last pageview (rollups/visits.py)",
              "Exit page of the visit (visit metrics only); repeatable (OR)"),
)
VISIT_ONLY_DIMENSIONS: tuple[str, ...] = ("entry_page", "exit_page")
VISIT_DIMENSIONS: tuple[str, ...] = VISIT_ONLY_DIMENSIONS + ("os", "browser", "device", "referrer")


def visit_column_filter(filter_name: str) -> bool:
    """Whether visit metrics read this filter from the `visits` row itself (the visit's entry/exit
    page, its first event's os/browser/device/referrer). Every other filter (page, name,
    hostname, country, UTM, prop=...) selects the visits that include an event matching it."""
    return filter_dimension(filter_name).name in VISIT_DIMENSIONS
_SECONDS = "extract(epoch FROM ended - started)::float8"
METRICS += (
    Metric("visits", "visit", "count(*)", zero=0, rollup="sum(visits)::bigint"),
    Metric("views_per_visit", "visit", "sum(pageviews)::float8 / nullif(count(*), 0)", json_type=float,
           rollup="sum(pageviews)::float8 / nullif(sum(visits), 0)"),
    # a fraction 0..1: visits with exactly one pageview and no interaction (engagement beacons
    # are not interactions)
    Metric("bounce_rate", "visit",
           "(count(*) FILTER (WHERE pageviews = 1 AND interactions = 0))::float8 / nullif(count(*), 0)",
           json_type=float, rollup="sum(bounces)::float8 / nullif(sum(visits), 0)"),
    Metric("visit_duration", "visit", f"avg({_SECONDS})", json_type=float,
           rollup="(sum(dur_us) / 1000000.0 / nullif(sum(visits), 0))::float8"),
    Metric("median_visit_duration", "visit",
           f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {_SECONDS})", json_type=float),
)


# Lookups are cached (the builder makes a few dozen per statement); the catalog is fixed once
# the modules are imported (tests/test_catalog.py extends it before anything looks it up).
# --- issue 11 part 1: `prop:<key>`, a custom property of events (raw events only) ---
PROP_PREFIX = "prop:"
PROP_FILTER = "prop"                # the filter parameter: prop=<key>:<value>, repeatable


def is_prop(name: str) -> bool:
    return name.startswith(PROP_PREFIX)


def prop_dimension(name: str) -> Dimension:
    """`prop:<key>`: the property's value as text ('' when the event does not have it), read from
    the events' props (no rollup carries props). The key is checked by the query model."""
    return Dimension(name, "props", "the event's `props` (ingestion/fields.py check_props())",
                     "A custom property's value", allow_empty=True)
# --- end issue 11 part 1 ---


def dimension(name: str) -> Dimension:
    # prop:<key> names come from requests: not cached (the cache would grow with them)
    return prop_dimension(name) if is_prop(name) else _dimension(name)


@cache
def _dimension(name: str) -> Dimension:
    return next(d for d in DIMENSIONS if d.name == name)


@cache
def metric(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


def dimension_names() -> tuple[str, ...]:
    return tuple(d.name for d in DIMENSIONS)


def metric_names() -> tuple[str, ...]:
    return tuple(m.name for m in METRICS)


def filter_names() -> tuple[str, ...]:
    return tuple(f for d in DIMENSIONS for f in d.filters)


def filter_dimension(filter_name: str) -> Dimension:
    """The dimension a filter parameter reads (`page_prefix` reads `page`; `prop:<key>`, the
    query model's name for a `prop=<key>:<value>` filter, reads that property)."""
    return prop_dimension(filter_name) if is_prop(filter_name) else _filter_dimension(filter_name)


@cache
def _filter_dimension(filter_name: str) -> Dimension:
    for d in DIMENSIONS:
        if filter_name in d.filters:
            return d
    raise KeyError(filter_name)


def event_filter_names() -> tuple[str, ...]:
    """The filters of dimensions that events carry (not the visit-only entry/exit pages)."""
    return tuple(f for d in DIMENSIONS if d.name not in VISIT_ONLY_DIMENSIONS for f in d.filters)


def columns() -> dict[str, str]:
    """API dimension name -> events column (visit-only dimensions have none)."""
    return {d.name: d.column for d in DIMENSIONS if d.name not in VISIT_ONLY_DIMENSIONS}


@cache
def metrics_of(kind: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS if m.kind == kind)


def kind_of_metric() -> dict[str, str]:
    return {m.name: m.kind for m in METRICS}


