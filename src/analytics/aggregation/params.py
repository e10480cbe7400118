"""Query-parameter types of the read API: each states its constraint in the OpenAPI schema and
enforces exactly that, so that what the schema says is what the API does (tests/test_schema_fuzz
holds them to it). Rules JSON Schema cannot state are checked later, by the query model, with
the names in web/rules.py.
"""
from __future__ import annotations

import zoneinfo
from functools import lru_cache
from typing import Annotated

from pydantic import WithJsonSchema

from .. import catalog
from ..timefmt import ISO_PATTERN
from .intervals import INTERVAL_PATTERN, MAX_LENGTH

NO_NUL = r"^[^\u0000]*$"
METRICS: tuple[str, ...] = catalog.metric_names()
ORDER_PATTERN = "^(?:" + "|".join(METRICS) + ")(?::(?:asc|desc))?$"
MAX_TEXT = 2048
MAX_VALUES = 100
# group_by items: the catalog's widest rollup family groups by five; a few props more is plenty,
# and every item is a column of the query (hundreds of them cost the database seconds).
MAX_GROUP_BY = 8


# Names the tz database ships that are not zones a dashboard means: the server's own setting
# (`localtime`, whatever /etc/localtime is) and a placeholder zone (`Factory`).
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """The IANA zones this machine's tz database knows (what zoneinfo can load)."""
    return tuple(sorted(zoneinfo.available_timezones() - _NOT_ZONES))


@lru_cache(maxsize=1)
def zone_set() -> frozenset[str]:
    """zone_names() for membership tests (a tuple's `in` walks ~600 names: ~8 us a request)."""
    return frozenset(zone_names())


# Each type states its constraint in the schema; the query model (and the seed endpoint) enforce
# exactly it, with messages that say what is wrong (pydantic would quote a 1,800-character
# pattern back).
Instant = Annotated[str, WithJsonSchema({"type": "string", "pattern": ISO_PATTERN})]
IntervalText = Annotated[str, WithJsonSchema({"type": "string", "maxLength": MAX_LENGTH,
                                              "pattern": INTERVAL_PATTERN})]
ZoneName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(zone_names())})]
# Filter values compared with stored text (which holds no NUL).
Text = Annotated[str, WithJsonSchema({"type": "string", "maxLength": MAX_TEXT, "pattern": NO_NUL})]
NonEmptyText = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
                                              "pattern": NO_NUL})]
OrderBy = Annotated[str, WithJsonSchema({"type": "string", "pattern": ORDER_PATTERN})]


def enum_text(values: tuple[str, ...]) -> object:
    """A string documented as one of `values` (the API also takes them in any letter case)."""
    return Annotated[str, WithJsonSchema({"type": "string", "enum": list(values)})]


def filter_type(d: catalog.Dimension) -> object:
    """The OpenAPI type of a filter value of dimension `d` (the query model enforces it)."""
    if d.values:
        return enum_text(d.values)
    return Text if d.allow_empty else NonEmptyText


# --- issue 11 part 1: prop:<key> in group_by, prop=<key>:<value> filters (checked in query.py) ---
PROP_KEY_PATTERN = "[^\\u0000-\\u001f\\u007f]+"
GROUP_BY_DOC = ("Repeatable: a dimension, or `prop:<key>` (a custom property's value, '' for events "
                "without it; key 1-300 bytes, no control characters; answered from raw events)")
GroupName = Annotated[str, WithJsonSchema({"anyOf": [
    {"type": "string", "enum": list(catalog.dimension_names())},
    {"type": "string", "pattern": f"^prop:{PROP_KEY_PATTERN}$", "maxLength": 305}]})]
PropFilter = Annotated[str, WithJsonSchema({"type": "string", "pattern": f"^{PROP_KEY_PATTERN}:[^\\u0000]*$"})]
