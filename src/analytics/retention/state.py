"""What the read path and the job share: the horizons table, its DDL, and the settings' rule."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

STATE_TABLE = "retention_state"
# Workers re-read the horizons (with rollup readiness) this often; a run waits longer than that
# between publishing a horizon and dropping what is before it. Read them from the primary: a
# replica that catches up replays the publication and the drop in one go.
HORIZONS_TTL_S = 5.0


@dataclass(frozen=True)
class Horizons:
    """Instants before which data is gone (None: nothing was ever dropped).

    raw: raw events before it were dropped (the end of the newest dropped chunk).
    rollup: rollup rows (and session entries) before it were deleted (a UTC midnight).
    """

    raw: datetime | None = None
    rollup: datetime | None = None


NO_HORIZONS = Horizons()


def retention_ddl(schema: str) -> list[sql.Composable]:
    """The table as this code expects it (revision 0005 makes it): one row, made with it."""
    s = sql.Identifier(schema)
    return [
        sql.SQL("""CREATE TABLE IF NOT EXISTS {}.{} (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            raw_horizon timestamptz,
            rollup_horizon timestamptz,
            last_run_at timestamptz)""").format(s, sql.Identifier(STATE_TABLE)),
        sql.SQL("INSERT INTO {}.{} (id) VALUES (true) ON CONFLICT (id) DO NOTHING").format(
            s, sql.Identifier(STATE_TABLE)),
    ]


def check_settings(settings) -> None:
    """Refuse settings that would drop data the rest still needs (raises ValueError, naming them).

    Rollups answer for ranges whose raw events are gone, so they must be kept at least as
    long; with raw events kept forever (RETENTION_DAYS=0), rollups are too."""
    raw, rollup = settings.retention_days, settings.rollup_retention_days
    if raw < 0 or rollup < 0:
        raise ValueError("RETENTION_DAYS and ROLLUP_RETENTION_DAYS must be 0 (keep forever) or a "
                         f"number of days; got RETENTION_DAYS={raw:g}, ROLLUP_RETENTION_DAYS={rollup:g}")
    if rollup and (not raw or rollup < raw):
        raise ValueError(f"ROLLUP_RETENTION_DAYS ({rollup:g}) must be >= RETENTION_DAYS ({raw:g}; 0 keeps "
                         "raw events forever): rollups answer for ranges whose raw events are gone")
    if settings.retention_interval_s <= 0:
        raise ValueError("RETENTION_INTERVAL_SECONDS must be positive")
