"""The export's one statement: `COPY (SELECT ... ORDER BY time, id) TO STDOUT`.

PostgreSQL formats every row itself (CSV quoting, JSON escaping) and sends it as it goes: the
service only moves bytes, which is what makes 100,000+ rows/s possible from one Python worker
(bench/export.py measures this against a named cursor fetching the same rows). COPY takes no
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

Format = Literal["ndjson", "csv"]

# The fields of an event as GET /api/events/{id}/ answers them, in that order. `time` is UTC ISO
# 8601 as the API writes it (2026-11-01T10:00:00.123456Z, no fraction when it is 0): timestamptz's
# own output under SETTINGS, with two replaces (to_char was the costliest column: measured, about
# a third of the whole CSV statement). `is_bot` is true/false in both formats.
FIELDS: tuple[str, ...] = ("id", "time", "page", "ip_address", "user_agent", "referrer", "session_id",
                           "duration", "description", "os", "browser", "device", "is_bot",
                           # issue 11 part 1 (props: a JSON object in NDJSON, its JSON text in CSV)
                           "name", "props", "hostname", "utm_source", "utm_medium", "utm_campaign", "country")
# The first byte must not wait for the whole range to be sorted: left to itself the planner sorts
# every matching row first (a parallel seq scan and a sort, on disk past work_mem: gigabytes and
# minutes for 10M rows), where walking each chunk's time index in order (ChunkAppend) and
# sorting only the rows of one instant by id (Incremental Sort) streams from the first row with
# a few kB of sort memory. Without parallel workers an export takes one database core.
SETTINGS = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'",
            "SET LOCAL enable_sort = off", "SET LOCAL max_parallel_workers_per_gather = 0")
_TIME = "replace(replace(e.time::text, ' ', 'T'), '+00', 'Z') AS time"  # '+' is only in the offset
_COLUMNS = ", ".join(_TIME if f == "time" else "e.is_bot::text AS is_bot" if f == "is_bot" else f"e.{f}"
                     for f in FIELDS)
# One JSON object per line, written by row_to_json (compact, nulls as null, is_bot a boolean). It
# is measured as fast as concatenating to_json() of each text column (each call looks the type
# up again on PostgreSQL 15), and it cannot get a field wrong.
_JSON_COLUMNS = _COLUMNS.replace("e.is_bot::text AS is_bot", "e.is_bot")

# NDJSON through COPY: CSV mode with a delimiter and a quote character that JSON text never holds
# raw (JSON escapes every control character), so each line is the JSON text exactly, unquoted.
# (COPY's text format would double every backslash of the JSON.)
_NDJSON_OPTIONS = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"
_CSV_OPTIONS = "FORMAT csv, HEADER true"


def copy_statement(q: StatsQuery, fmt: Format) -> tuple[str, dict]:
    """(COPY statement with %(name)s placeholders, their values) for the range and filters of `q`."""
    b = Builder(q)
    where = b._where("time", Piece(None, q.start, q.end), bots_column=True)
    select_from = f"FROM events e WHERE {where} ORDER BY e.time, e.id"
    if fmt == "csv":
        return f"COPY (SELECT {_COLUMNS} {select_from}) TO STDOUT WITH ({_CSV_OPTIONS})", b.params
    # row_to_json over a subquery keeps the subquery's order (nothing above it reorders).
    return (f"COPY (SELECT row_to_json(r)::text FROM (SELECT {_JSON_COLUMNS} {select_from}) r) "
            f"TO STDOUT WITH ({_NDJSON_OPTIONS})", b.params)
