"""The export's one statement: `COPY (SELECT ... ORDER BY time, id) TO STDOUT`.

PostgreSQL formats every row itself (CSV quoting and escaping) and sends it as it goes: the
service only moves bytes (for NDJSON, one `bytes.translate` per chunk: export/ndjson.py), which
is what makes 100,000+ rows/s possible from one Python worker (bench/export.py). COPY takes no
bind parameters, so the statement is bound client-side (psycopg's ClientCursor quotes every
value); the filters are the stats API's own (aggregation/builder.py), so `page_prefix`,
`referrer` ('' = direct) and `include_bots` mean the same thing on both.

Rows come in (time, id) order: a deterministic order, the one a resumed export continues from
(`start` = the last time received, then skip the ids already seen at that time).
"""
from __future__ import annotations

from typing import Literal

from ..aggregation.builder import Builder
from ..aggregation.planner import Piece
from ..aggregation.query import StatsQuery
from .ndjson import key_columns

Format = Literal["ndjson", "csv"]

# The fields of an event as GET /api/events/{id}/ answers them, in that order, then the event
# fields of issue 11 (revision 0007: name, props, hostname, the page's UTM parameters, country),
# appended so that existing readers (by name in NDJSON, by position in CSV) are unaffected. `time`
# is UTC ISO 8601 as the API writes it (2026-11-01T10:00:00.123456Z, no fraction when it is 0):
# timestamptz's own output under SETTINGS, with two replaces (to_char was the costliest column:
# measured, about a third of the whole CSV statement). `is_bot` is true/false in both formats.
# `props` (jsonb) is a JSON object (or null) in NDJSON, its JSON text in CSV.
FIELDS: tuple[str, ...] = ("id", "time", "page", "ip_address", "user_agent", "referrer", "session_id",
                           "duration", "description", "os", "browser", "device", "is_bot",
                           "name", "props", "hostname", "utm_source", "utm_medium", "utm_campaign", "country")
JSON_FIELDS: tuple[str, ...] = ("props",)
# Not text: their output is already a JSON value (or null) and never needs quoting.
_BARE = frozenset({"duration", "is_bot", *JSON_FIELDS})
# The first byte must not wait for the whole range to be sorted: left to itself the planner sorts
# every matching row first (a parallel seq scan and a sort, on disk past work_mem: gigabytes and
# minutes for 10M rows), where walking each chunk's time index in order (ChunkAppend) and
# sorting only the rows of one instant by id (Incremental Sort) streams from the first row with
# a few kB of sort memory. Without parallel workers an export takes one database core.
SETTINGS = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'",
            "SET LOCAL enable_sort = off", "SET LOCAL max_parallel_workers_per_gather = 0")
_TIME = "replace(replace(e.time::text, ' ', 'T'), '+00', 'Z') AS time"  # '+' is only in the offset


def _column(f: str) -> str:
    return _TIME if f == "time" else "e.is_bot::text AS is_bot" if f == "is_bot" else f"e.{f}"


_COLUMNS = ", ".join(_column(f) for f in FIELDS)



# NDJSON: COPY writes CSV whose fields are already JSON values, between constant columns holding
# the keys, and export/ndjson.py makes each chunk JSON with one translate (see its docstring for
# why each option). PostgreSQL's own JSON functions (row_to_json, json_build_object, to_json per
# column) cost 2-3x the CSV work on the database (bench/README.md, "Export": the variants measured).
def _ndjson_columns() -> str:
    """Each field's key (a constant, export/ndjson.py key_columns), then its value; the closing brace."""
    keys = key_columns(FIELDS)
    out = []
    for i, f in enumerate(FIELDS):
        out += [f"E'{keys[i]}' AS k{i}".replace("\x02", "\\x02"), _column(f)]
    return ", ".join(out + [f"'{keys[-1]}' AS k{len(FIELDS)}"])


_NDJSON_COLUMNS = _ndjson_columns()
_NDJSON_OPTIONS = ("FORMAT csv, DELIMITER E'\\x01', QUOTE '\"', ESCAPE '\\', NULL 'null', FORCE_QUOTE ("
                   + ", ".join(f for f in FIELDS if f not in _BARE) + ")")
_CSV_OPTIONS = "FORMAT csv, HEADER true"


def copy_statement(q: StatsQuery, fmt: Format) -> tuple[str, dict]:
    """(COPY statement with %(name)s placeholders, their values) for the range and filters of `q`."""
    b = Builder(q)
    where = b._where("time", Piece(None, q.start, q.end), bots_column=True)
    columns, options = (_COLUMNS, _CSV_OPTIONS) if fmt == "csv" else (_NDJSON_COLUMNS, _NDJSON_OPTIONS)
    select = f"SELECT {columns} FROM events e WHERE {where} ORDER BY e.time, e.id"
    return f"COPY ({select}) TO STDOUT WITH ({options})", b.params
