"""What a failed write means: whose fault it is, and which field of which event.

The group-commit writer shares one COMMIT among many requests, so it must tell "this event's
data" (answer that event 422, store the others) from "the database cannot be reached" (open the
circuit: refuse at once until a probe answers) from everything in between (answer the requests
concerned 503, keep writing).

- DATA: the rows themselves. SQLSTATE class 22 (data exception), class 54 (program limit
  exceeded: an index row over 2,704 bytes; psycopg files it under OperationalError, which is why
  the writer took it for an outage), 23514 (check violation), 23502 (not null), and values that
  psycopg itself cannot send (a NUL in text, a lone surrogate).
- RETRY: deadlock or serialization failure: the transaction rolled back; run it again.
- DOWN: the database cannot be reached: class 08 (connection exception), shutdown or crash
  (57P01-57P03), too many connections (53300), a connection lost (no SQLSTATE), a pool that
  cannot hand out a connection, a socket error.
- STALLED: our own deadline passed while a statement ran. A lock wait and a silent network
  partition look the same from here; the writer asks a fresh connection which one it was.
- BUSY: anything else: a statement timeout (57014), a lock not available (55P03), out of
  memory or disk (53xxx), a deadlock after its retries.
"""
from __future__ import annotations

import re

import psycopg
from psycopg_pool import PoolTimeout

from ..rollups.catalog import FAMILIES
from .pipeline import EventRecord

DATA, RETRY, DOWN, STALLED, BUSY = "data", "retry", "down", "stalled", "busy"

_DATA_STATES = frozenset({"23514", "23502"})
_DOWN_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_RETRY_STATES = frozenset({"40P01", "40001"})


def visitor_cap_exceeded(exc: BaseException) -> bool:
    """A visitor's stored entries would pass their cap (rollups/sessions.py VISITORS)."""
    from ..rollups.sessions import VISITORS
    return getattr(getattr(exc, "diag", None), "constraint_name", None) == VISITORS.cap_constraint


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # before OSError, of which it is a subclass
        return STALLED
    if isinstance(exc, (PoolTimeout, OSError, psycopg.InterfaceError)):
        return DOWN
    if isinstance(exc, (UnicodeError, OverflowError)):  # a value the binary COPY cannot send
        return DATA
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if not state:  # raised by psycopg itself: a value it cannot send, or a lost connection
            return DATA if isinstance(exc, psycopg.DataError) else (
                DOWN if isinstance(exc, psycopg.OperationalError) else BUSY)
        if state[:2] in ("22", "54") or state in _DATA_STATES:
            return DATA
        if state in _RETRY_STATES:
            return RETRY
        if state[:2] == "08" or state in _DOWN_STATES:
            return DOWN
    return BUSY


# -- which field ---------------------------------------------------------------------------------

# events column -> the request field it comes from
_FIELD_OF_COLUMN = {"referrer_host": "referrer", "os": "user_agent", "browser": "user_agent",
                    "device": "user_agent", "is_bot": "user_agent"}
_TEXT_COLUMNS = ("page", "referrer_host", "session_id", "user_agent", "referrer", "description",
                 "browser", "ip_address")


def _index_columns() -> dict[str, tuple[str, ...]]:
    """Index or constraint name -> the text columns it holds (events columns)."""
    out: dict[str, tuple[str, ...]] = {
        "events_page_time_idx": ("page",),  # chunk indexes end with it: _hyper_1_2_chunk_events_...
        "rollup_sessions_pkey": ("session_id",),
        "rollup_sessions_entries_cap": ("session_id",),
        # a visitor (one address and browser, one day) past 5,000 (quarter hour, page) entries
        "rollup_visitors_entries_cap": ("page",),
    }
    for fam in FAMILIES:
        for _, table in fam.tables():
            out[f"{table}_pkey"] = fam.columns
            out[f"{table}_page"] = ("page",)
    return out


_INDEXES = _index_columns()
_INDEX_IN_MESSAGE = re.compile(r'(?:index|constraint) "([^"]+)"')
_COLUMN_IN_CONTEXT = re.compile(r"column (\w+)")


def _named_columns(exc: BaseException) -> tuple[str, ...]:
    diag = getattr(exc, "diag", None)
    if diag is None:
        return ()
    names = [diag.constraint_name or ""]
    m = _INDEX_IN_MESSAGE.search(diag.message_primary or "")
    if m:
        names.append(m.group(1))
    for name in names:
        for index, columns in _INDEXES.items():
            if name and name.endswith(index):
                return columns
    known = set(_TEXT_COLUMNS) | set(_FIELD_OF_COLUMN)
    if diag.column_name in known:
        return (diag.column_name,)
    m = _COLUMN_IN_CONTEXT.search(diag.context or "")  # COPY: "COPY events, line 1, column page"
    if m and m.group(1) in known:
        return (m.group(1),)
    return ()


def _size(value: object) -> int:
    if not isinstance(value, str):
        return 0
    return len(value.encode("utf-8", "surrogatepass"))


def _cannot_send(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def rejected_field(exc: BaseException, record: EventRecord) -> str | None:
    """The request field that made the database refuse `record`, or None if it cannot be told.
    Several candidates (a rollup key holds page, referrer host and browser): the longest."""
    columns = _named_columns(exc)
    if not columns:
        columns = tuple(c for c in _TEXT_COLUMNS if _cannot_send(getattr(record, c)))
    if not columns:
        return None
    column = max(columns, key=lambda c: _size(getattr(record, c, None)))
    return _FIELD_OF_COLUMN.get(column, column)


def rejection_message(exc: BaseException) -> str:
    """Our own words for the refusal: database text never reaches a client."""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("54"):
        return ("too large for the database: with the event's other indexed values it exceeds an "
                "index row (2,704 bytes)")
    if state == "23514":
        return "refused by a limit on stored data"
    return "a value the database cannot store"
