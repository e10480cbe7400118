"""Reading the input files: which format, gzip or not, and one row at a time with its position.

gzip is recognised by its magic bytes, not by the file name. The format is recognised by the
first bytes of the (decompressed) content: `{` is NDJSON; otherwise a CSV header, ours (it
names `page`) or Umami's `website_event` export (it names `event_id` and `url_path`).

Each row comes with the line it starts on and the byte offset, in the decompressed stream,
just after it: the checkpoint stores that offset, and a resumed import seeks to it (a gzip
file is decompressed up to it again: gzip cannot seek, but that is fast next to storing).
A physical line longer than MAX_LINE_BYTES is never held in memory: it is skipped and reported.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple

GZIP_MAGIC = b"\x1f\x8b"
MAX_LINE_BYTES = 1024 * 1024
FORMATS = ("ndjson", "csv", "umami")

# csv refuses a field over 128 KB by default; one line is bounded by MAX_LINE_BYTES anyway.
csv.field_size_limit(MAX_LINE_BYTES)


class FormatError(ValueError):
    """The file as a whole cannot be read (not a reject of one row)."""


class Row(NamedTuple):
    line: int  # the line the row starts on (1-based)
    end: int  # byte offset just after the row, in the decompressed stream
    fields: dict | None  # None when the row could not even be split into fields
    error: tuple[str, str] | None = None  # (field, reason) when fields is None


@dataclass
class Input:
    path: Path
    fmt: str
    gzip: bool
    size: int  # bytes on disk (compressed, for gzip): what progress is measured in
    header: list[str] | None = None
    header_end: int = 0  # offset just after the CSV header


class _Stream:
    """The decompressed bytes of a file, read line by line with a running offset, and how far
    into the file on disk that is (for progress)."""

    def __init__(self, path: Path) -> None:
        self.raw = open(path, "rb")
        self.gzip = self.raw.read(2) == GZIP_MAGIC
        self.raw.seek(0)
        self.data: BinaryIO = (io.BufferedReader(gzip.GzipFile(fileobj=self.raw), 1 << 20)
                               if self.gzip else self.raw)
        self.pos = 0

    def seek(self, pos: int) -> None:
        if pos == self.pos:
            return
        if self.gzip:  # forward only: decompress and drop
            remaining = pos - self.pos
            while remaining > 0:
                got = len(self.data.read(min(remaining, 1 << 20)))
                if not got:
                    break
                remaining -= got
        else:
            self.data.seek(pos)
        self.pos = pos

    def lines(self) -> Iterator[bytes | None]:
        """Each physical line, or None for one over MAX_LINE_BYTES (skipped, not kept)."""
        readline = self.data.readline
        while True:
            raw = readline(MAX_LINE_BYTES)
            if not raw:
                return
            if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
                n = len(raw)
                while True:
                    more = readline(MAX_LINE_BYTES)
                    n += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                self.pos += n
                yield None
                continue
            self.pos += len(raw)
            yield raw

    def disk_position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.raw.close()


def _first_bytes(path: Path, n: int = 64 * 1024) -> tuple[bool, bytes]:
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
        f.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=f) as g:
                try:
                    return True, g.read(n)
                except (OSError, EOFError) as exc:
                    raise FormatError(f"not a readable gzip file: {exc}") from None
        return False, f.read(n)


def _csv_header(path: Path) -> tuple[list[str], int]:
    s = _Stream(path)
    try:
        for raw in s.lines():
            if raw is None:
                raise FormatError("the CSV header line is over 1 MB")
            text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
            if not text.strip():
                continue
            header = next(csv.reader([text]))
            return [h.strip() for h in header], s.pos
    finally:
        s.close()
    raise FormatError("empty file: no CSV header")


def detect(path: Path, fmt: str = "auto") -> Input:
    """What the file is. `fmt` forces the format ("ndjson", "csv", "umami"); "auto" sniffs it."""
    gz, head = _first_bytes(path)
    size = path.stat().st_size
    if fmt == "auto":
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not text:
            fmt = "ndjson"  # an empty file: nothing to import, whatever it is
        elif text.startswith(b"{"):
            fmt = "ndjson"
        else:
            fmt = "csv"
    if fmt == "ndjson":
        return Input(path, "ndjson", gz, size)
    header, header_end = _csv_header(path)
    if fmt == "csv" and {"event_id", "url_path"} <= set(header) and "page" not in header:
        fmt = "umami"
    if fmt == "csv" and "page" not in header:
        raise FormatError(f"a CSV header must name `page` (our export) or `event_id` and `url_path` "
                          f"(Umami's website_event export); this one has: {', '.join(header[:12])}")
    if fmt == "umami" and not {"event_id", "created_at", "url_path"} <= set(header):
        raise FormatError("an Umami export must have the columns event_id, created_at and url_path")
    return Input(path, fmt, gz, size, header, header_end)


class Reader:
    """The rows of `inp` from byte offset `start` (0: the beginning) and line `line`."""

    def __init__(self, inp: Input, start: int = 0, line: int = 0) -> None:
        self.inp = inp
        self.stream = _Stream(inp.path)
        self.line = line
        if inp.header is not None:
            start = max(start, inp.header_end)
            if line == 0:
                self.line = self._header_lines()
        self.stream.seek(start)

    def _header_lines(self) -> int:
        """Lines up to the end of the header (blank lines before it count)."""
        n = 0
        s = _Stream(self.inp.path)
        try:
            for _ in s.lines():
                n += 1
                if s.pos >= self.inp.header_end:
                    break
        finally:
            s.close()
        return n

    def close(self) -> None:
        self.stream.close()

    def disk_position(self) -> int:
        return self.stream.disk_position()

    def __iter__(self) -> Iterator[Row]:
        return self._ndjson() if self.inp.fmt == "ndjson" else self._csv()

    def _ndjson(self) -> Iterator[Row]:
        for raw in self.stream.lines():
            self.line += 1
            if raw is None:
                yield Row(self.line, self.stream.pos, None, ("row", f"line is over {MAX_LINE_BYTES} bytes"))
                continue
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except UnicodeDecodeError:
                yield Row(self.line, self.stream.pos, None, ("row", "not valid UTF-8"))
                continue
            except ValueError as exc:
                yield Row(self.line, self.stream.pos, None, ("row", f"not valid JSON: {exc}"))
                continue
            if not isinstance(value, dict):
                yield Row(self.line, self.stream.pos, None, ("row", "not a JSON object"))
                continue
            yield Row(self.line, self.stream.pos, value)

    def _csv(self) -> Iterator[Row]:
        header = self.inp.header or []
        # Lines decoded one at a time, so that the offset after each record is known exactly
        # (csv pulls only the lines a record needs). Invalid UTF-8 becomes lone surrogates, which
        # the mapping refuses, naming the field.
        too_long: list[int] = []
        start_line = self.line

        def text_lines() -> Iterator[str]:
            for raw in self.stream.lines():
                if raw is None:
                    too_long.append(start_line + reader.line_num + 1)
                    yield "\n"
                    continue
                yield raw.decode("utf-8", errors="surrogateescape")

        reader = csv.reader(text_lines(), strict=False)
        while True:
            first = start_line + reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self.line = start_line + reader.line_num
                yield Row(first, self.stream.pos, None, ("row", f"not valid CSV: {exc}"))
                continue
            self.line = start_line + reader.line_num
            if too_long:
                yield Row(too_long.pop(), self.stream.pos, None, ("row", f"line is over {MAX_LINE_BYTES} bytes"))
                continue
            if not values or values == [""]:
                continue
            if len(values) != len(header):
                yield Row(first, self.stream.pos, None,
                          ("", f"has {len(values)} columns, the header {len(header)}"))
                continue
            yield Row(first, self.stream.pos, dict(zip(header, values)))


def read_all_bytes(path: Path) -> bytes:
    """The decompressed content (tests)."""
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data

