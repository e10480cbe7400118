"""`python -m analytics import FILE...` (`make import FILE=...`): load history into the events table.

Each file (NDJSON or CSV of our export format, or Umami's website_event CSV export; gzip or
not) is read in chunks of --chunk-rows rows. A chunk is stored with the batch writer's COPY
path (repository.insert_events: idempotent on (id, time)) and the file's checkpoint is moved
past it in the same transaction, so an import stopped at any instant (Ctrl-C, kill -9, the
database going away) is resumed by running the same command again and ends exactly as one
clean run would. Rows that cannot be stored go to the rejects file (line, field, reason) and
never stop the import.

Rollups: the raw rows are loaded without the per-statement rollup hooks (this process does not
install them), and at the end the rollups of the UTC days that received new rows are rebuilt
from raw (rollups/rebuild.py), in whole days of about --rebuild-events events per transaction.
Measured with `python -m bench import` (bench/README.md): maintaining the rollups row by row
with the hooks made the load about 3x slower, more than the load plus the rebuild; and a
rebuild is exact by construction. Live ingestion goes on meanwhile: its events fold into the
rollups as always, and each rebuild transaction holds writers only for its own duration
(they queue and retry).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg

from ..config import Settings, get_settings
from ..db import CLIENT_ENCODING
from ..ingestion.dberrors import DATA, RETRY, failure_kind, rejected_field, rejection_message
from ..ingestion.enrich import UserAgentCache
from ..ingestion.pipeline import EventRecord
from ..ingestion.repository import insert_events, probe_insert
from ..rollups.rebuild import rebuild
from ..schema import bootstrap_with_retry
from . import checkpoint as ckpt
from .formats import FORMATS, FormatError, Input, Reader, detect
from .mapping import Mapper, Reject
from .progress import Progress

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DAY_S = 86400


class Rejects:
    """The rejects file (CSV: line, field, reason). Lines are written and synced before the
    transaction that moves the checkpoint past them commits; a resumed import first cuts the
    file back to the size that checkpoint recorded, so it holds each reject exactly once."""

    HEADER = "line,field,reason\n"

    def __init__(self, path: Path, keep_bytes: int) -> None:
        self.path = path
        self.keep = keep_bytes
        self.pending: list[tuple[int, str, str]] = []
        self.f: io.BufferedRandom | None = None
        if keep_bytes == 0 and path.exists():
            path.unlink()  # from an earlier import of this file

    def add(self, line: int, field: str, reason: str) -> None:
        self.pending.append((line, field, reason))

    def flush(self) -> int:
        """Write what is pending; the file's size."""
        if self.pending:
            if self.f is None:
                if not self.path.exists():
                    self.keep = 0  # removed since the last run: start it again
                self.f = open(self.path, "r+b" if self.path.exists() else "w+b")
                self.f.truncate(self.keep)
                self.f.seek(0, os.SEEK_END)
                if self.keep == 0:
                    self.f.write(self.HEADER.encode())
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(self.pending)
            self.f.write(buf.getvalue().encode("utf-8", errors="backslashreplace"))
            self.f.flush()
            os.fsync(self.f.fileno())
            self.pending.clear()
        return self.f.tell() if self.f is not None else self.keep

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def _day(t: datetime) -> int:
    return int(t.timestamp() // DAY_S)


async def _bad_rows(conn: psycopg.AsyncConnection, recs: list[EventRecord], offset: int = 0
                    ) -> list[tuple[int, BaseException]]:
    """Which records the database refuses (bisection with savepoints; nothing is kept)."""
    err = await probe_insert(conn, recs, lambda e: failure_kind(e) == DATA)
    if err is None:
        return []
    if len(recs) == 1:
        return [(offset, err)]
    mid = len(recs) // 2
    return await _bad_rows(conn, recs[:mid], offset) + await _bad_rows(conn, recs[mid:], offset + mid)


@dataclass
class _Chunk:
    records: list[EventRecord] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line of each record
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    rows: int = 0
    end: int = 0  # the byte offset after the chunk's last row
    line: int = 0  # the last line read
    disk: int = 0  # bytes of the file on disk read so far (progress)


class FileImport:
    def __init__(self, conn: psycopg.AsyncConnection, settings: Settings, inp: Input,
                 cp: ckpt.Checkpoint, rejects: Rejects, chunk_rows: int, progress: Progress,
                 umami_session: str = "session_id") -> None:
        self.conn, self.settings, self.inp, self.cp = conn, settings, inp, cp
        self.rejects, self.chunk_rows, self.progress = rejects, chunk_rows, progress
        self.mapper = Mapper(inp.fmt, UserAgentCache(settings.ua_cache_size),
                             timedelta(seconds=settings.max_clock_skew_s), umami_session=umami_session,
                             store_ip=settings.store_ip)
        self.run_rows = 0  # read by this run (a resumed run reads only the rest)

    def _chunks(self, stop: threading.Event) -> Iterator[_Chunk]:
        """Read, parse and map the rest of the file, one chunk of --chunk-rows rows at a time."""
        reader = Reader(self.inp, self.cp.position, self.cp.line)
        try:
            chunk = _Chunk()
            for row in reader:
                chunk.rows += 1
                if row.fields is None:
                    chunk.rejects.append((row.line, *row.error))
                else:
                    try:
                        chunk.records.append(self.mapper.to_record(row.fields, row.line))
                        chunk.lines.append(row.line)
                    except Reject as r:
                        chunk.rejects.append((row.line, r.field, r.reason))
                if chunk.rows >= self.chunk_rows:
                    chunk.end, chunk.line, chunk.disk = row.end, reader.line, reader.disk_position()
                    yield chunk
                    if stop.is_set():
                        return
                    chunk = _Chunk()
            chunk.end, chunk.line, chunk.disk = reader.stream.pos, reader.line, self.inp.size
            yield chunk
        finally:
            reader.close()

    async def load(self) -> None:
        """Parse in a thread while the database stores the chunk before (the two overlap: the
        database's work is in its own process), commit chunks in order."""
        chunks: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()

        def produce() -> None:
            try:
                for c in self._chunks(stop):
                    while not stop.is_set():
                        try:
                            chunks.put(c, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                chunks.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                chunks.put(exc)

        if self.cp.position:
            self.progress.start_at(self._disk_at(self.cp.position))
        producer = threading.Thread(target=produce, name="import-reader", daemon=True)
        producer.start()
        try:
            while True:
                c = await asyncio.to_thread(chunks.get)
                if c is None:
                    return
                if isinstance(c, BaseException):
                    raise c
                for r in c.rejects:
                    self.rejects.add(*r)
                await self._commit(c.records, c.lines, c.rows, c.end, c.line)
                self.progress.update(c.disk, self.cp.rows_read, self.run_rows)
        finally:
            stop.set()
            while producer.is_alive():  # unblock it, wherever it is
                try:
                    chunks.get_nowait()
                except queue.Empty:
                    pass
                producer.join(0.05)
            try:  # and a reader of the queue still waiting in its thread
                chunks.put_nowait(None)
            except queue.Full:
                pass

    def _disk_at(self, position: int) -> int:
        """Bytes on disk behind `position` of the decompressed stream (for a gzip file, an
        estimate: the same fraction of the file)."""
        if not self.inp.gzip:
            return position
        return 0

    async def _commit(self, records: list[EventRecord], lines: list[int], rows: int,
                      end: int, line: int) -> None:
        """Store one chunk and move the checkpoint past it, in one transaction."""
        for attempt in range(5):
            rejects_bytes = self.rejects.flush()
            try:
                async with self.conn.transaction():
                    new = await insert_events(self.conn, records)
                    cur = await self.conn.execute(ckpt.PROGRESS_SQL, {
                        "position": end, "line": line, "rows": rows, "stored": len(new),
                        "duplicates": len(records) - len(new), "rejected": rows - len(records),
                        "rejects_bytes": rejects_bytes, "days": sorted({_day(t) for _, t in new}),
                        "fingerprint": self.cp.fingerprint})
                    (self.cp.rows_read, self.cp.stored, self.cp.duplicates, self.cp.rejected,
                     self.cp.days) = await cur.fetchone()
                self.cp.position, self.cp.line, self.cp.rejects_bytes = end, line, rejects_bytes
                self.run_rows += rows
                return
            except psycopg.Error as exc:
                kind = failure_kind(exc)
                if kind == RETRY and attempt < 4:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if kind != DATA:
                    raise
            # Some rows the database itself refuses: find them, reject them, store the rest.
            async with self.conn.transaction():
                bad = await _bad_rows(self.conn, records)
            if not bad:
                continue
            for i, err in sorted(bad, key=lambda b: b[0], reverse=True):
                self.rejects.add(lines[i], rejected_field(err, records[i]) or "row", rejection_message(err))
                del records[i], lines[i]
            self.rejects.pending.sort()
        raise RuntimeError("the database kept refusing a chunk")

    async def rebuild_rollups(self, window_events: int, out) -> float:
        """Rebuild the rollups of the days that received new rows, in windows of whole days
        holding about `window_events` events each (a window holds writers for its duration:
        the events in it, old and new, are what it costs), marking each window done; returns
        the seconds it took."""
        t0 = time.perf_counter()
        days = sorted(self.cp.days)
        if not days:
            return 0.0
        with psycopg.connect(str(self.settings.database_url)) as sync:
            sync.execute("SELECT set_config('search_path', %s, false)", (f"{self.settings.db_schema}, public",))
            per_day = dict(sync.execute(
                """SELECT (extract(epoch FROM time_bucket('1 day', time)) / 86400)::int, count(*) FROM events
                   WHERE time >= %s AND time < %s GROUP BY 1""",
                (EPOCH + timedelta(days=days[0]), EPOCH + timedelta(days=days[-1] + 1))).fetchall())
            sync.commit()
            windows: list[list[int]] = []
            size = 0
            for d in days:
                n = per_day.get(d, 0)
                if windows and size + n <= window_events:
                    windows[-1].append(d)
                    size += n
                else:
                    windows.append([d])
                    size = n
            for i, w in enumerate(windows, 1):
                start, end = EPOCH + timedelta(days=w[0]), EPOCH + timedelta(days=w[-1] + 1)
                report = await asyncio.to_thread(rebuild, sync, start, end)
                await ckpt.days_done(self.conn, self.cp.fingerprint, w)
                print(f"import {self.inp.path.name}: rollups rebuilt for {start.date()} .. {end.date()} "
                      f"({i}/{len(windows)}, {sum(per_day.get(d, 0) for d in w):,} events) "
                      f"in {report.seconds:.1f}s", file=out, flush=True)
        return time.perf_counter() - t0


async def import_file(settings: Settings, path: Path, args: argparse.Namespace, out) -> ckpt.Checkpoint:
    inp = detect(path, args.format)
    fp = ckpt.fingerprint(path)
    async with await psycopg.AsyncConnection.connect(str(settings.database_url), autocommit=True,
                                                     client_encoding=CLIENT_ENCODING) as conn:
        await conn.execute("SELECT set_config('search_path', %s, false)", (f"{settings.db_schema}, public",))
        # One importer per file at a time; the lock goes with the connection (kill -9 included).
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 12))", (fp,))
        if not (await cur.fetchone())[0]:
            raise FormatError("another import of this file is running")
        cp = await ckpt.load(conn, fp)
        if cp is not None and cp.phase == "done" and not args.restart:
            print(f"import {path}: already imported ({cp.rows_read:,} rows: {cp.stored:,} stored, "
                  f"{cp.duplicates:,} duplicates, {cp.rejected:,} rejected); --restart reads it again",
                  file=out, flush=True)
            return cp
        if cp is None or args.restart or cp.format != inp.fmt:
            # Days loaded by an interrupted run still need their rebuild, even if every row is
            # a duplicate this time.
            pending = list(cp.days) if cp is not None else []
            cp = ckpt.Checkpoint(fp, str(path.resolve()), inp.fmt, days=pending)
            await ckpt.start(conn, cp)
        elif cp.phase == "load" and cp.position:
            print(f"import {path}: resuming at line {cp.line + 1:,} ({cp.rows_read:,} rows done)",
                  file=out, flush=True)
        rejects = Rejects(Path(args.rejects) if args.rejects else path.with_name(path.name + ".rejects.csv"),
                          cp.rejects_bytes)
        progress = Progress(path.name, inp.size, out=out)
        job = FileImport(conn, settings, inp, cp, rejects, args.chunk_rows, progress,
                         umami_session=f"{args.umami_sessions}_id")
        t0 = time.perf_counter()
        try:
            if cp.phase == "load":
                await job.load()
                await ckpt.set_phase(conn, fp, "rebuild")
        finally:
            progress.close()
            rejects.close()
        load_s = time.perf_counter() - t0
        rebuild_s = await job.rebuild_rollups(args.rebuild_events, out)
        await ckpt.set_phase(conn, fp, "done")
        rate = job.run_rows / load_s if load_s > 0 else 0.0
        where = f" (see {rejects.path})" if cp.rejected else ""
        print(f"import {path}: {inp.fmt}{' gzip' if inp.gzip else ''}, {cp.rows_read:,} rows: "
              f"{cp.stored:,} stored, {cp.duplicates:,} duplicates, {cp.rejected:,} rejected{where}; "
              f"this run loaded {job.run_rows:,} rows in {load_s:.1f}s ({rate:,.0f} rows/s), "
              f"rebuilt rollups in {rebuild_s:.1f}s", file=out, flush=True)
        return cp


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m analytics import",
                                 description="Load events from files (resumable: run again to continue).")
    ap.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ap.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                    help="ndjson or csv (our export), umami (website_event CSV); auto: sniffed")
    ap.add_argument("--rejects", help="rejects file (default: FILE.rejects.csv beside FILE); one FILE only")
    ap.add_argument("--chunk-rows", type=int, default=10_000,
                    help="rows per transaction (and per checkpoint); default 10000")
    ap.add_argument("--rebuild-events", type=int, default=200_000,
                    help="events (old and new) per rollup-rebuild transaction at the end, in whole "
                         "UTC days; writers wait for each one; default 200000")
    ap.add_argument("--umami-sessions", choices=("session", "visit"), default="session",
                    help="what becomes session_id for an Umami export: its session_id (a visitor, "
                         "about a month) or its visit_id (one visit); default session")
    ap.add_argument("--restart", action="store_true", help="ignore the checkpoint: read from the top")
    args = ap.parse_args(argv)
    if args.rejects and len(args.files) > 1:
        ap.error("--rejects takes one FILE")
    if args.chunk_rows < 1 or args.rebuild_events < 1:
        ap.error("--chunk-rows and --rebuild-events must be at least 1")
    for f in args.files:
        if not f.is_file():
            ap.error(f"{f}: no such file")
    settings = get_settings()
    out = sys.stderr
    # psycopg's warnings about the rollback a Ctrl-C interrupts say nothing the message below does not.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    try:
        asyncio.run(bootstrap_with_retry(settings))  # the schema at head (the checkpoint table)
        failed = 0
        for f in args.files:
            try:
                asyncio.run(import_file(settings, f, args, out))
            except (FormatError, OSError) as exc:
                print(f"import {f}: {exc}", file=out, flush=True)
                failed += 1
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("import interrupted: what was committed stays; run the same command again to resume",
              file=out, flush=True)
        return 130
    except psycopg.OperationalError as exc:
        print(f"import stopped, the database is unreachable ({str(exc).splitlines()[0] if str(exc) else exc}): "
              "run the same command again to resume", file=out, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
