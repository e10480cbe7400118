"""Parsing and validating request bodies: one event (a JSON object), or a batch (a JSON array,
or NDJSON: one event per line).

Every event passes the same rules: EventCreateSchema, then the Enricher's time window. Any bad
item makes the whole batch a 422 that lists every bad item by index (and, for NDJSON, by line)
with the field and the reason; nothing is written.

The single-event body is parsed here too, not by FastAPI's body dependency: json.loads plus one
pydantic validation is about a tenth of the request's CPU less than FastAPI's generic path, and
the error shape (`{"loc": ["body", field], "msg", "type"}`) stays the same.

Hostile bodies are refused before any object is built from them: nesting deeper than
MAX_DEPTH (json.loads recursed until RecursionError: a 500, or a dropped connection on the batch
endpoint) and batches of more than BATCH_MAX_EVENTS items (pydantic's validate_json built all
3.3 million items of a 10 MB `[{},{},...]`, 545 MB and 2 s, before its length check) are found
with C-speed byte operations over the body (bracket and comma marks outside strings), or, when
items nest, by skipping items one at a time up to the limit. A 3.9 MB body of 1.3 million items
is refused in about 50 ms (bench/refuse.py).
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..privacy.visitor import Sender
from .pipeline import Enricher, EventRecord, InvalidEvent
from .schemas import NUL_MESSAGE, EventCreateSchema, fields_with_nul

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})


class BodyRejected(Exception):
    """The body as a whole is refused; `errors` is the response's `detail` list."""

    def __init__(self, status: int, error: str, errors: list[dict]) -> None:
        super().__init__(error)
        self.status, self.error, self.errors = status, error, errors


def _err(loc: list, msg: str, type_: str, **extra: Any) -> dict:
    return {"loc": loc, "msg": msg, "type": type_, **extra}


MAX_DEPTH = 32  # arrays/objects inside each other; an event needs 1 (a batch 2)

_NOT_MARK = bytes(sorted(set(range(256)) - set(b'"[]{},')))
_CURLY_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_INNERMOST = re.compile(rb"\[[^\[\]]*\]")


# Strings that hold a bracket or a comma: past this many, splitting on their quotes would cost
# more than parsing a few items (a normal batch of 1,000 events has a few thousand).
_MANY_MARKED_STRINGS = 100_000


def _outside_strings(body: bytes) -> bytes | None:
    """The brackets and commas of a JSON body that are not inside strings, `{}` written `[]`
    (None when too many strings hold such marks: the callers then parse item by item).

    C-speed byte operations only (no parsing, no object per token): escaped backslashes and
    quotes go, then everything but quotes, brackets and commas; what lies between the 2k-th
    and (2k+1)-th quote is inside a string."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Two quotes with no mark between them change nothing about what is inside a string: drop
    # them first (most strings hold no bracket or comma), then split on the quotes left.
    marks = body.translate(None, _NOT_MARK).replace(b'""', b"")
    if b'"' in marks:
        if marks.count(b'"') > _MANY_MARKED_STRINGS:
            return None
        marks = b"".join(marks.split(b'"')[0::2])
    return marks.translate(_CURLY_AS_SQUARE)


def _depth(outside: bytes, limit: int) -> int:
    """How deep the brackets of `outside` nest, up to limit + 1. Each `replace("[]", "")` removes
    the innermost level. Malformed bodies count their unmatched opening brackets as levels
    (a recursive parser would descend into them)."""
    brackets = outside.translate(None, b",")
    for level in range(limit + 1):
        if not brackets:
            return level
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):  # nothing pairs up any more: malformed
            return min(limit + 1, level + inner.count(b"["))
        brackets = inner
    return limit + 1


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects in `body` nest deeper than `limit`, outside strings."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the single event's usual case: no work
        return False
    outside = _outside_strings(body)
    return outside is not None and _depth(outside, limit) > limit


def _deep_error() -> BodyRejected:
    return BodyRejected(422, "validation_error", [_err(
        ["body"], f"JSON nested deeper than {MAX_DEPTH} levels: an event is one flat object",
        "json_too_deep", limit=MAX_DEPTH)])


def _too_many(max_events: int) -> BodyRejected:
    return BodyRejected(413, "batch_too_large", [_err(
        ["body"], f"the batch has more than {max_events} events; at most {max_events} are accepted "
        "per request (BATCH_MAX_EVENTS)", "too_many_events", limit=max_events)])


_STARTS_AN_ARRAY = re.compile(rb"[ \t\n\r]*\[")


def _flat_array_exceeds(body: bytes, outside: bytes, limit: int) -> bool:
    """Whether a JSON array none of whose items nests (depth <= 2) has more than `limit` items,
    from its marks outside strings. Every container is an item, so over the limit one count
    tells; else one regex pass drops the containers (at most `limit` of them) and the commas
    left separate the items. False if the body is not an array (the parser says so)."""
    if not (_STARTS_AN_ARRAY.match(body) and outside.endswith(b"]")):
        return False
    inner = outside[1:-1]
    if inner.count(b"[") > limit:
        return True
    return _INNERMOST.sub(b"", inner).count(b",") >= limit


_WS = r"[ \t\n\r]*"
_ARRAY_START = re.compile(_WS + r"\[" + _WS)
_SEPARATOR = re.compile(_WS + r"([,\]])" + _WS)
# A JSON object holding no array or object: what nearly every event is. Matched in C; anything
# else is parsed by the json module, one item at a time.
_FLAT_OBJECT = re.compile(r'\{[^{}\[\]"]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^{}\[\]"]*)*\}')
_DECODER = json.JSONDecoder()


def array_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON array `text` has more than `limit` items, looking at no more than
    `limit + 1` of them (cost bounded by the limit, not by the body). For arrays whose items
    nest; False also when `text` is not a well-formed array (the parser that comes next says
    where it breaks)."""
    if text.count(",") < limit:  # n items have n - 1 separators
        return False
    m = _ARRAY_START.match(text)
    if m is None:
        return False
    pos, n = m.end(), 0
    if text.startswith("]", pos):
        return False
    while True:
        m = _FLAT_OBJECT.match(text, pos)
        if m is not None:
            pos = m.end()
        else:
            try:
                _, pos = _DECODER.raw_decode(text, pos)
            except (ValueError, RecursionError):
                return False
        n += 1
        if n > limit:
            return True
        m = _SEPARATOR.match(text, pos)
        if m is None or m.group(1) == "]":
            return False
        pos = m.end()


_NON_BLANK_LINE = re.compile(rb"^[^\S\n]*\S", re.MULTILINE)
# An NDJSON batch may have blank lines, but at most this many lines per event it may hold: every
# line costs each pass over the body, so 4 MB of newlines around one event would cost a worker
# over a second while counting as one event. The cap is checked by counting newlines (memchr).
NDJSON_LINES_PER_EVENT = 2


def ndjson_max_lines(max_events: int) -> int:
    return NDJSON_LINES_PER_EVENT * max_events + 1  # + 1: a final newline after the last line


def _ndjson_too_many_lines(body: bytes, max_events: int) -> bool:
    return body.count(b"\n") + 1 > ndjson_max_lines(max_events)


def _too_many_lines(max_events: int) -> BodyRejected:
    limit = ndjson_max_lines(max_events)
    return BodyRejected(413, "batch_too_large", [_err(
        ["body"], f"the NDJSON body has more than {limit} lines, blank ones included; at most "
        f"{NDJSON_LINES_PER_EVENT} lines per event of BATCH_MAX_EVENTS ({max_events})", "too_many_lines",
        limit=limit)])


def ndjson_exceeds(body: bytes, limit: int) -> bool:
    """Whether an NDJSON body has more than `limit` non-blank lines (stops at limit + 1)."""
    if body.count(b"\n") < limit:
        return False
    return sum(1 for _ in itertools.islice(_NON_BLANK_LINE.finditer(body), limit + 1)) > limit


def _refuse_hostile_batch(body: bytes, ndjson: bool, max_events: int) -> None:
    """Raise the 422 (nesting) or 413 (too many items) of a batch body before it is parsed."""
    if ndjson and _ndjson_too_many_lines(body, max_events):
        raise _too_many_lines(max_events)  # before any pass that walks the lines
    outside = _outside_strings(body)
    depth = MAX_DEPTH if outside is None else _depth(outside, MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise _deep_error()
    if ndjson:
        too_many = ndjson_exceeds(body, max_events)
    elif depth <= 2:
        too_many = _flat_array_exceeds(body, outside, max_events)
    else:  # items that nest, or strings full of marks: counted one by one, up to the limit
        too_many = array_exceeds(_decode(body), max_events)
    if too_many:
        raise _too_many(max_events)


def _json_error(exc: ValueError, line: int | None = None) -> tuple[str, dict]:
    if isinstance(exc, json.JSONDecodeError):
        ln = exc.lineno if line is None else line
        return (f"invalid JSON at line {ln} column {exc.colno}: {exc.msg}",
                {"line": ln, "column": exc.colno})
    # json.loads raises a plain ValueError for one thing only: an integer of more digits than
    # Python converts (sys.get_int_max_str_digits(), 4,300 by default).
    return ("invalid JSON: a number too long to read (more than 4,300 digits)",
            ({"line": line} if line is not None else {}))


@dataclass
class ParsedBatch:
    items: list[Any]
    lines: list[int] | None = None  # NDJSON: the 1-based line of each item
    maybe_nul: bool = True  # False when the raw body cannot hold a NUL character


def _maybe_nul(body: bytes) -> bool:
    """JSON can only carry NUL escaped (a raw control character is invalid JSON)."""
    return b"\\u0000" in body


def parse_body(body: bytes, content_type: str, max_events: int) -> ParsedBatch:
    media = content_type.split(";", 1)[0].strip().lower()
    parsed = _parse_ndjson(body, max_events) if media in NDJSON_TYPES else _parse_array(body)
    parsed.maybe_nul = _maybe_nul(body)
    if not parsed.items:
        raise BodyRejected(422, "validation_error",
                            [_err(["body"], "the batch is empty: send at least one event", "empty_batch")])
    if len(parsed.items) > max_events:
        raise _too_many(max_events)
    return parsed


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRejected(422, "validation_error",
                           [_err(["body"], "the body is not valid UTF-8", "json_invalid")]) from None


def _load_json(body: bytes | str) -> Any:
    """The whole body as JSON (strict UTF-8), or a 422 that says where it breaks. Callers have
    refused deep nesting already; RecursionError is caught all the same."""
    try:
        return json.loads(_decode(body) if isinstance(body, bytes) else body)
    except RecursionError:
        raise BodyRejected(422, "validation_error", [_err(
            ["body"], f"JSON nested too deeply (at most {MAX_DEPTH} levels)", "json_too_deep",
            limit=MAX_DEPTH)]) from None
    except ValueError as exc:
        msg, extra = _json_error(exc)
        raise BodyRejected(422, "validation_error", [_err(["body"], msg, "json_invalid", **extra)]) from None


def _parse_array(body: bytes | str) -> ParsedBatch:
    data = _load_json(body)
    if not isinstance(data, list):
        raise BodyRejected(422, "validation_error", [_err(
            ["body"], "expected a JSON array of events (or NDJSON with Content-Type "
            "application/x-ndjson)", "list_type")])
    return ParsedBatch(data)


def _parse_ndjson(body: bytes, max_events: int) -> ParsedBatch:
    raw_lines = body.split(b"\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(raw_lines) if ln.strip()]
    if len(numbered) > max_events:
        # Refuse by count before parsing thousands of lines.
        return ParsedBatch([None] * len(numbered))
    items, lines, errors = [], [], []
    for index, (lineno, ln) in enumerate(numbered):
        try:
            items.append(json.loads(ln.decode("utf-8")))
        except RecursionError:
            errors.append(_err(["body", index], f"line {lineno} is nested too deeply", "json_too_deep",
                               line=lineno))
            items.append(None)
        except UnicodeDecodeError:
            errors.append(_err(["body", index], f"line {lineno} is not valid UTF-8", "json_invalid",
                               line=lineno))
            items.append(None)
        except ValueError as exc:
            msg, extra = _json_error(exc, lineno)
            errors.append(_err(["body", index], msg, "json_invalid", **extra))
            items.append(None)
        lines.append(lineno)
    if errors:
        raise BodyRejected(422, "validation_error", errors)
    return ParsedBatch(items, lines)


def _check(item: Any, enricher: Enricher, now: datetime, loc: list, extra: dict,
           maybe_nul: bool = True, sender: Sender | None = None) -> tuple[EventRecord | None, list[dict]]:
    nul = [_err([*loc, f], NUL_MESSAGE, "value_error", **extra)
           for f in fields_with_nul(item)] if maybe_nul else []
    try:
        ev = EventCreateSchema.model_validate(item)
    except ValidationError as exc:
        bad = {tuple(e["loc"]) for e in nul}
        return None, nul + [_err([*loc, *e["loc"]], e["msg"], e["type"], **extra)
                            for e in exc.errors(include_url=False, include_input=False, include_context=False)
                            if (*loc, *e["loc"]) not in bad]
    if nul:
        return None, nul
    try:
        return enricher.to_record(ev, now, sender), []
    except InvalidEvent as exc:
        return None, [_err([*loc, *exc.loc], exc.message, exc.type, **extra)]


def validate(parsed: ParsedBatch, enricher: Enricher,
             now: datetime | None = None, sender: Sender | None = None) -> list[EventRecord]:
    """Records for every item, or BodyRejected listing every bad item."""
    now = now or datetime.now(timezone.utc)
    records: list[EventRecord] = []
    errors: list[dict] = []
    for index, item in enumerate(parsed.items):
        record, bad = _check(item, enricher, now, ["body", index],
                             {"line": parsed.lines[index]} if parsed.lines else {}, parsed.maybe_nul,
                             sender)
        if record is not None:
            records.append(record)
        errors += bad
    if errors:
        raise BodyRejected(422, "validation_error", errors)
    return records


_BATCH = TypeAdapter(list[EventCreateSchema])


def batch_records(body: bytes, content_type: str, max_events: int, enricher: Enricher,
                  sender: Sender | None = None) -> list[EventRecord]:
    """Records for a batch body, or BodyRejected.

    First the cheap refusals (nesting, then the number of items), which build nothing. Then a
    JSON array is parsed and validated in one call (pydantic's own JSON parser, no Python dicts:
    about twice as fast as json.loads plus a validation per item). Anything that call refuses,
    and NDJSON, goes the item-by-item way, which writes the 422."""
    ndjson = content_type.split(";", 1)[0].strip().lower() in NDJSON_TYPES
    _refuse_hostile_batch(body, ndjson, max_events)
    if not ndjson and not _maybe_nul(body):
        try:
            events = _BATCH.validate_json(body)
        except ValueError:  # ValidationError included
            events = None
        if events and len(events) <= max_events:
            now = datetime.now(timezone.utc)
            memo: dict = {}  # this batch's visitor ids and countries (pipeline.Enricher.to_record)
            try:
                return [enricher.to_record(ev, now, sender, memo) for ev in events]
            except InvalidEvent:
                pass
    return validate(parse_body(body, content_type, max_events), enricher, sender=sender)


def parse_event(body: bytes, enricher: Enricher, sender: Sender | None = None) -> EventRecord:
    """The single-event body: one JSON object."""
    if not body.strip():
        raise BodyRejected(422, "validation_error", [_err(["body"], "Field required", "missing")])
    if too_deep(body):
        raise _deep_error()
    data = _load_json(body)
    record, errors = _check(data, enricher, datetime.now(timezone.utc), ["body"], {}, _maybe_nul(body),
                            sender)
    if errors:
        raise BodyRejected(422, "validation_error", errors)
    assert record is not None
    return record


def count_events(body: bytes, content_type: str, limit: int) -> int:
    """How many events a batch body holds, up to `limit` + 1, from its bytes and without
    parsing it (the rate limiter charges a batch its events before anything is built from it).
    The same byte operations as the hostile-batch checks; a body that is not a batch (the
    parser refuses it next) counts as 1."""
    if content_type.split(";", 1)[0].strip().lower() in NDJSON_TYPES:
        if _ndjson_too_many_lines(body, limit):
            return limit + 1  # refused by the endpoint (413, too many lines), charged as a full batch
        return max(1, sum(1 for _ in itertools.islice(_NON_BLANK_LINE.finditer(body), limit + 1)))
    outside = _outside_strings(body)
    if outside is None or not (_STARTS_AN_ARRAY.match(body) and outside.endswith(b"]")):
        return 1 if outside is not None else _count_items(body, limit)
    inner = outside[1:-1]
    if not inner:
        return 1
    if inner.count(b"[") > limit:  # every container is an item or inside one: over the limit
        return limit + 1
    flat = inner
    for _ in range(MAX_DEPTH):  # drop containers, innermost first, until only separators are left
        dropped = _INNERMOST.sub(b"", flat)
        if len(dropped) == len(flat):
            break
        flat = dropped
    return min(limit + 1, flat.count(b",") + 1)


def _count_items(body: bytes, limit: int) -> int:
    """count_events for an array whose strings hold too many marks to split on: items skipped
    one at a time, up to limit + 1."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return 1
    m = _ARRAY_START.match(text)
    if m is None or text.startswith("]", m.end()):
        return 1
    pos, n = m.end(), 0
    while n <= limit:
        m = _FLAT_OBJECT.match(text, pos)
        if m is not None:
            pos = m.end()
        else:
            try:
                _, pos = _DECODER.raw_decode(text, pos)
            except (ValueError, RecursionError):
                return max(1, n)
        n += 1
        m = _SEPARATOR.match(text, pos)
        if m is None or m.group(1) == "]":
            return n
        pos = m.end()
    return n
