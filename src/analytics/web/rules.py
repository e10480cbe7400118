"""Validation rules that JSON Schema cannot state, named once.

The OpenAPI schema states every constraint it can (lengths, ranges, enums, patterns, item
counts). What it cannot state relates a value to the clock, to another parameter, to the
database's limits or to the size of the answer. Each such refusal is a 422 whose error `type`
is one of the names below, and every operation lists the ones it enforces in its 422 response
(`x-rules`), so a client (and the schema fuzz test) can tell a documented refusal from a bug.
"""
from __future__ import annotations

RULES: dict[str, str] = {
    "time_window": "An event's `time` lies between now - MAX_EVENT_AGE_DAYS and now + "
                   "MAX_CLOCK_SKEW_SECONDS.",
    "too_many_bytes": "Text is also limited in UTF-8 bytes (database index rows hold at most "
                      "2,704 bytes): `page` and the derived referrer host and keys, alone and "
                      "together.",
    "calendar_date": "`start` and `end` name a real date and time (no month 13, no hour 24).",
    "database_limit": "A value the database refuses although it passed every check above (it "
                      "never does, by design; if one does, only that event is refused).",
    "json_too_deep": "JSON nests at most 32 levels deep (unknown fields included).",
    "range_order": "`end` is after `start`.",
    "date_range": "`start`, `end` and the previous period of `compare=previous` lie between "
                  "1900-01-01 and 9000-01-01 (UTC).",
    "interval_bounds": "An interval is positive, between 1 minute and 1 year, and does not mix "
                       "months or years with smaller units.",
    "too_many_buckets": "A timeseries has at most STATS_MAX_BUCKETS buckets.",
    "too_many_rows": "An answer has at most its row cap (SEED_MAX_ROWS for the seed aggregate; "
                     "groups x buckets for a grouped timeseries).",
    "needs_group_by": "`limit` and `offset` page through groups: they need `group_by`.",
    "totals_only": "`compare` is available on /totals only.",
    "requested_metric": "`order_by` names one of the requested `metrics`.",
    "visit_dimension": "Visit metrics group by entry_page, exit_page, os, browser, device and "
                       "referrer only; under a filter a visit does not carry (page, name, ...) they "
                       "count the visits that include a matching event and are asked on their own; "
                       "entry_page and exit_page go with visit metrics only.",
    "unknown_parameter": "Parameters that the operation does not define are refused.",
    # issue 11 part 1
    "page_url": "An event has `page` or `url`; `url` is a URL whose host name is at most 253 bytes "
                "(its UTM values are limited in bytes: too_many_bytes).",
    "prop_value": "A custom property (`props`) has a non-empty key of at most 300 bytes, and a value "
                  "that is a string of at most 2,000 bytes, a finite number (integers within "
                  "±2^53) or a boolean; `null` is dropped. The same keys in `prop:<key>` and `prop`.",
    "retention_horizon": "A question needs data that retention dropped: raw events before the raw "
                         "horizon (RETENTION_DAYS) that no rollup answers for, or anything before "
                         "the rollup horizon (ROLLUP_RETENTION_DAYS). Stats answers state both "
                         "horizons in `meta`.",
}


def rules_422(*names: str, description: str = "A parameter or the body is invalid; "
                                                "`detail` names it") -> dict:
    """The 422 entry of an operation's `responses`: its description and the rules it enforces."""
    unknown = set(names) - set(RULES)
    if unknown:
        raise KeyError(f"undocumented rules: {sorted(unknown)}")
    return {"description": description, "x-rules": {n: RULES[n] for n in names}}
