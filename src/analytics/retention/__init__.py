"""Retention: bounded disk for a service kept for years, with answers that stay consistent.

RETENTION_DAYS drops raw event chunks older than that (drop_chunks: the Apache edition has no
add_retention_policy); ROLLUP_RETENTION_DAYS (>= RETENTION_DAYS) deletes rollup rows older than
that, in batches (rollups are plain tables), and trims the session state of what it refers to.
One run at a time per database (an advisory lock), daily (RETENTION_INTERVAL_SECONDS), from a
background task of every worker (`worker.py`) or by hand (`python -m analytics retention`).

The read path knows the horizons (the oldest instants raw events and rollups are kept from)
from the one-row table `retention_state` (read with rollup readiness, cached per worker); a run
publishes a new horizon first and waits until every worker has seen it before it drops
anything, so no question is ever planned on raw data that is about to go (`run.py`).
"""
from __future__ import annotations

from .state import Horizons, check_settings, retention_ddl

__all__ = ["Horizons", "check_settings", "retention_ddl"]
