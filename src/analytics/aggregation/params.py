"""Query-parameter types of the read API: each states its constraint in the OpenAPI schema and
enforces exactly that, so that what the schema says is what the API does (tests/test_schema_fuzz
holds them to it). Rules JSON Schema cannot state are checked later, by the query model, with
the names in web/rules.py.
"""
from __future__ import annotations

import zoneinfo
from functools import lru_cache
from typing import Annotated

from pydantic import StringConstraints, WithJsonSchema

from ..ingestion.enrich import DEVICES, OS_NAMES
from ..timefmt import ISO_PATTERN
from .intervals import INTERVAL_PATTERN

NO_NUL = r"^[^\u0000]*$"
MAX_TEXT = 2048
MAX_VALUES = 100


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """The IANA zones this machine's tz database knows (what zoneinfo can load)."""
    return tuple(sorted(zoneinfo.available_timezones()))


Instant = Annotated[str, StringConstraints(max_length=40, pattern=ISO_PATTERN)]
IntervalText = Annotated[str, StringConstraints(max_length=64, pattern=INTERVAL_PATTERN)]
ZoneName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(zone_names())})]
# Filter values compared with stored text (which holds no NUL).
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=NO_NUL)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, pattern=NO_NUL)]


def enum_text(values: tuple[str, ...]) -> object:
    """A string documented as one of `values` (the API also takes them in any letter case)."""
    return Annotated[str, WithJsonSchema({"type": "string", "enum": list(values)})]


OsName = enum_text(OS_NAMES)
DeviceName = enum_text(DEVICES)
