"""Where an import of one file stands, kept in `import_checkpoints` (revision 0006).

Why the database and not a file next to the input: the checkpoint is updated in the very
transaction that stores the rows it covers, so after a kill -9 at any instant the stored rows
and the checkpoint agree: nothing is lost, nothing is loaded twice, and the counts (stored,
duplicates, rejected) and the set of days whose rollups need a rebuild are exact. A file
would be one write out of step with the database (and the input's directory may be read-only).

A file is known by its fingerprint (size, first and last MiB): the same file under another
name resumes; a file changed since (appended to, rewritten) starts over.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from .ddl import CHECKPOINT_TABLE

_T = sql.Identifier(CHECKPOINT_TABLE)
_EDGE = 1 << 20


def fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(_EDGE, size - _EDGE))
            h.update(f.read(_EDGE))
    return h.hexdigest()


@dataclass
class Checkpoint:
    fingerprint: str
    path: str
    format: str
    phase: str = "load"  # load -> rebuild -> done
    position: int = 0
    line: int = 0
    rows_read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects_bytes: int = 0
    days: list[int] = field(default_factory=list)  # UTC days (since 1970-01-01) to rebuild


_COLS = ("fingerprint", "path", "format", "phase", "position", "line", "rows_read", "stored",
         "duplicates", "rejected", "rejects_bytes", "days")


async def load(conn: psycopg.AsyncConnection, fp: str) -> Checkpoint | None:
    async with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        await cur.execute(sql.SQL("SELECT {} FROM {} WHERE fingerprint = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, _COLS)), _T), (fp,))
        return await cur.fetchone()


async def start(conn: psycopg.AsyncConnection, cp: Checkpoint) -> None:
    """A fresh checkpoint for this file (replacing an old one: --restart, or a finished import).
    `cp.days` carries over the days an interrupted run loaded and did not rebuild yet."""
    await conn.execute(sql.SQL("DELETE FROM {} WHERE fingerprint = %s").format(_T), (cp.fingerprint,))
    await conn.execute(sql.SQL("INSERT INTO {} (fingerprint, path, format, days) VALUES (%s, %s, %s, %s)").format(_T),
                       (cp.fingerprint, cp.path, cp.format, cp.days))


PROGRESS_SQL = sql.SQL("""UPDATE {} SET position = %(position)s, line = %(line)s,
    rows_read = rows_read + %(rows)s, stored = stored + %(stored)s,
    duplicates = duplicates + %(duplicates)s, rejected = rejected + %(rejected)s,
    rejects_bytes = %(rejects_bytes)s,
    days = ARRAY(SELECT DISTINCT d FROM unnest(days || %(days)s::integer[]) AS d ORDER BY d),
    updated_at = now()
    WHERE fingerprint = %(fingerprint)s
    RETURNING rows_read, stored, duplicates, rejected, days""").format(_T)


async def set_phase(conn: psycopg.AsyncConnection, fp: str, phase: str) -> None:
    await conn.execute(sql.SQL("UPDATE {} SET phase = %s, updated_at = now() WHERE fingerprint = %s").format(_T),
                 (phase, fp))


async def days_done(conn: psycopg.AsyncConnection, fp: str, done: list[int]) -> None:
    await conn.execute(sql.SQL("""UPDATE {} SET days = ARRAY(SELECT d FROM unnest(days) AS d
        WHERE d <> ALL(%s::integer[]) ORDER BY d), updated_at = now() WHERE fingerprint = %s""").format(_T),
                 (done, fp))
