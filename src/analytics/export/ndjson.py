"""NDJSON lines from the export's COPY rows, a whole chunk at a time.

PostgreSQL's own JSON (row_to_json, json_build_object, to_json per column) costs 2-3x what the
same COPY costs as CSV on the database (bench/README.md, "Export": every variant measured). So
the NDJSON statement (statement.py) asks COPY for CSV shaped so that the row already is the JSON
line but for two kinds of bytes:

- each value is its JSON value: QUOTE '"' with ESCAPE '\\' writes a quoted field as `"` + the
  text with `"` and `\\` escaped by a backslash + `"`, which is the JSON string of the text
  whenever it holds no control character; FORCE_QUOTE quotes every text value ('' too);
  NULL 'null' writes SQL NULL as the bare word null (a text 'null' is quoted); duration is an
  integer and is_bot 'true'/'false', unquoted; props (jsonb) is JSON text, but CSV quotes it
  (it holds `"`), and that quoting is undone here (one regex per chunk, only where there is one);
- between the values, constant columns hold the keys: `{"id":`, `,"time":`, ..., `}`, written
  with \x02 where the key has `"` (a `"` would make CSV quote and escape the constant);
- DELIMITER \x01 separates all of these.

So a clean row is the JSON line once every \x01 is deleted and every \x02 turned into `"`: one
`bytes.translate` over the whole chunk, at C speed. A text value that holds a control character
(a tab, a newline, \x01, \x02...) must be escaped instead; such a value only ever adds control
bytes to its row, so one count per chunk tells whether every row is clean (exactly
CONTROL_PER_ROW control bytes each). A chunk with a dirty row is converted row by row, the dirty
rows through a small CSV parser and json.dumps (the escapes PostgreSQL's JSON uses: \\n \\r \\t
\\b \\f, \\u00XX for the other control characters; non-ASCII as is).
"""
from __future__ import annotations

import json
import re
from typing import Callable, Sequence

_CONTROL = bytes(range(0x20))  # the C0 control characters: never in a clean row's values
_TO_JSON = bytes.maketrans(b"\x02", b'"')
_FIELD = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\x01]*)', re.S)
_UNESCAPE = re.compile(rb"\\(.)", re.S)


def _unescape(quoted_body: bytes) -> bytes:
    """The text of a quoted CSV field (its body, without the quotes): `\\x` -> `x`.

    COPY escapes only `"` and `\\` (ESCAPE '\\'), so the body is a run of plain bytes and of the
    pairs `\\\\` and `\\"`; replacing `\\\\` left to right finds exactly the first kind (a pair
    cannot start inside another). Three bytes.replace at C speed: a regex substitution with a
    group per escape took ~2 ms for a props value of 600 escaped quotes, on the event loop, where
    this takes ~45 us. NUL stands in for a backslash meanwhile: no text or jsonb value holds one.
    """
    if b"\\" not in quoted_body:
        return quoted_body
    if b"\x00" in quoted_body:  # not from PostgreSQL; the general form, to be safe
        return _UNESCAPE.sub(rb"\1", quoted_body)
    return quoted_body.replace(b"\\\\", b"\x00").replace(b'\\"', b'"').replace(b"\x00", b"\\")


def key_columns(fields: Sequence[str]) -> list[str]:
    """The constant text before each field's value (and the closing brace), with \x02 for `"`."""
    keys = [("{" if i == 0 else ",") + json.dumps(f) + ":" for i, f in enumerate(fields)]
    return [k.replace('"', "\x02") for k in keys] + ["}"]


class LineEncoder:
    """Turns a chunk of COPY rows (see the module docstring) into NDJSON lines."""

    def __init__(self, fields: Sequence[str], json_fields: Sequence[str] = ()) -> None:
        self.n = len(fields)
        self._keys = [json.dumps(f).encode() for f in fields]
        # 2n + 1 columns: 2n delimiters, two \x02 per key, the line's \n.
        self.control_per_row = 2 * self.n + 2 * self.n + 1
        self._json = {fields.index(f) for f in json_fields}
        # In a clean chunk's output, `,"props":"` can only be that key followed by its CSV quoting
        # (every `"` inside a text value is escaped): one regex undoes it.
        self._json_rx = [(b"," + self._keys[i] + b':"',
                          re.compile(rb"(," + re.escape(self._keys[i]) + rb':)"((?:[^"\\]|\\.)*)"', re.S))
                         for i in sorted(self._json)]

    def __call__(self, rows: list[bytes]) -> bytes:
        if not rows:
            return b""
        chunk = b"".join(rows)
        if self._control_bytes(chunk) == len(rows) * self.control_per_row:
            return self._clean(chunk)
        return b"".join(self._row(bytes(r)) for r in rows)  # (COPY gives memoryviews)

    def _row(self, row: bytes) -> bytes:
        return self._clean(row) if self._control_bytes(row) == self.control_per_row else self._dirty(row)

    @staticmethod
    def _control_bytes(data: bytes) -> int:
        return len(data) - len(data.translate(None, _CONTROL))

    def _clean(self, chunk: bytes) -> bytes:
        text = chunk.translate(_TO_JSON, b"\x01")
        for literal, rx in self._json_rx:
            if literal in text:  # a quoted JSON value somewhere in the chunk (not only nulls)
                text = rx.sub(lambda m: m.group(1) + _unescape(m.group(2)), text)
        return text

    def _dirty(self, row: bytes) -> bytes:
        """One row whose values hold control characters: parsed field by field."""
        fields: list[bytes | None] = []  # None: a quoted field, its text in `texts`
        texts: list[bytes] = []
        pos, end = 0, len(row) - 1  # without the final \n
        while True:
            m = _FIELD.match(row, pos, end)
            assert m is not None  # the pattern matches the empty string
            fields.append(m.group(2))
            texts.append(_unescape(m.group(1)) if m.group(1) is not None else b"")
            pos = m.end()
            if pos >= end:
                break
            pos += 1  # the delimiter
        if len(fields) != 2 * self.n + 1:
            raise ValueError(f"export row with {len(fields)} columns, expected {2 * self.n + 1}")
        values = []
        for i in range(self.n):
            raw, text = fields[2 * i + 1], texts[2 * i + 1]
            if raw is not None:
                values.append(raw)
            elif i in self._json:
                values.append(text)
            else:
                values.append(json.dumps(text.decode("utf-8"), ensure_ascii=False).encode())
        return b"{" + b",".join(k + b":" + v for k, v in zip(self._keys, values)) + b"}\n"


def encoder_for(fmt: str) -> Callable[[list[bytes]], bytes] | None:
    """The chunk encoder of a format: NDJSON's, or None (CSV: COPY's rows as they are)."""
    if fmt != "ndjson":
        return None
    from .statement import FIELDS, JSON_FIELDS
    return LineEncoder(FIELDS, JSON_FIELDS)
