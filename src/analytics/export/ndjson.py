"""NDJSON lines from the export's COPY rows, a whole chunk at a time.

PostgreSQL's own JSON (row_to_json, json_build_object, to_json per column) costs 15-20 µs per
row there: 50-60k rows/s, a third of what the same COPY writes as CSV (bench/README.md,
"Export"). So the NDJSON statement (statement.py) asks COPY for CSV shaped so that each field
already is its JSON value:

- DELIMITER \\x01: a control character, which a JSON text never holds raw;
- QUOTE '"' and ESCAPE '\\': a quoted field is `"` + the text with `"` and `\\` escaped by a
  backslash + `"`, which is the JSON string of that text whenever the text has no control
  character (JSON escapes those too);
- FORCE_QUOTE on every text column (and id, time): every text value is quoted, '' too;
- NULL 'null': SQL NULL is the bare word null; a text 'null' is quoted (force quote).
- duration is an integer, is_bot 'true'/'false' as text: unquoted, already JSON.
- props (jsonb) is JSON text: CSV quotes it (it holds `"`), so its quoting is undone here.

A row of n fields is then `v1 \\x01 v2 ... \\x01 vn \\n`: exactly n control bytes, unless some text
value holds a control character (a tab, a newline, ...), which only ever adds some. So for a chunk
of k rows one C-speed count tells whether every row is "clean": k * n control bytes. A clean
chunk becomes NDJSON by splitting on \\x01 and joining the pieces with the keys in between
(list slicing, no Python per row or per field); a chunk with a dirty row is converted row by
row, the dirty rows through a small parser and json.dumps (the same escapes as PostgreSQL's:
\\n \\r \\t \\b \\f, \\u00XX for the other control characters, non-ASCII as is).
"""
from __future__ import annotations

import json
import re
from typing import Callable, Sequence

# Bytes that are never in a clean row's values: the C0 control characters.
_CONTROL = bytes(range(0x20))
_FIELD = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\x01]*)', re.S)
_UNESCAPE = re.compile(rb"\\(.)", re.S)


def _unescape(quoted_body: bytes) -> bytes:
    """The text of a quoted CSV field (its body, without the quotes): `\\x` -> `x`."""
    return _UNESCAPE.sub(rb"\1", quoted_body) if b"\\" in quoted_body else quoted_body


class LineEncoder:
    """Turns a chunk of COPY rows (see the module docstring) into NDJSON lines."""

    def __init__(self, fields: Sequence[str], json_fields: Sequence[str] = ()) -> None:
        self.n = len(fields)
        keys = [json.dumps(f).encode() for f in fields]
        self._first = b"{" + keys[0] + b":"
        self._seps = [b"," + k + b":" for k in keys[1:]]
        self._newline = b"}\n" + self._first
        self._keys = keys
        self._json = {fields.index(f) for f in json_fields}
        # In a clean chunk's output, `,"props":"` can only be a JSON field's key followed by its
        # CSV quoting (values' own quotes are all escaped): that quoting is undone by one regex.
        self._json_rx = [(b"," + keys[i] + b':"',
                          re.compile(rb'(,' + re.escape(keys[i]) + rb':)"((?:[^"\\]|\\.)*)"', re.S))
                         for i in sorted(self._json)]

    def __call__(self, rows: list[bytes]) -> bytes:
        if not rows:
            return b""
        chunk = b"".join(rows)
        if len(chunk) - len(chunk.translate(None, _CONTROL)) == len(rows) * self.n:
            return self._clean(chunk, len(rows))
        return b"".join(self._clean(bytes(r), 1) if self._is_clean(r) else self._dirty(bytes(r)) for r in rows)

    def _is_clean(self, row: bytes) -> bool:
        return len(row) - len(bytes(row).translate(None, _CONTROL)) == self.n

    def _clean(self, chunk: bytes, rows: int) -> bytes:
        parts = chunk.split(b"\x01")
        out: list[bytes] = [b""] * (2 * len(parts) - 1)
        out[0::2] = parts
        out[1::2] = self._seps * rows
        body = b"".join(out).replace(b"\n", self._newline)  # every row's end: no \n in values
        text = self._first + body[:-len(self._first)]
        for literal, rx in self._json_rx:
            if literal in text:  # a quoted JSON value somewhere in the chunk (not only nulls)
                text = rx.sub(lambda m: m.group(1) + _unescape(m.group(2)), text)
        return text

    def _dirty(self, row: bytes) -> bytes:
        """One row whose values hold control characters: parsed field by field."""
        values: list[bytes] = []
        pos, end = 0, len(row) - 1  # without the final \n
        while True:
            m = _FIELD.match(row, pos, end)
            assert m is not None  # the pattern matches the empty string
            if m.group(1) is not None:
                text = _unescape(m.group(1))
                values.append(text if len(values) in self._json else
                              json.dumps(text.decode("utf-8"), ensure_ascii=False).encode())
            else:
                values.append(m.group(2))
            pos = m.end()
            if pos >= end:
                break
            pos += 1  # the delimiter
        if len(values) != self.n:
            raise ValueError(f"export row with {len(values)} fields, expected {self.n}")
        return b"{" + b",".join(k + b":" + v for k, v in zip(self._keys, values)) + b"}\n"


def encoder_for(fmt: str) -> Callable[[list[bytes]], bytes] | None:
    """The chunk encoder of a format: NDJSON's, or None (CSV: COPY's rows as they are)."""
    if fmt != "ndjson":
        return None
    from .statement import FIELDS, JSON_FIELDS
    return LineEncoder(FIELDS, JSON_FIELDS)
