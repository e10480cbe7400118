"""Pre-aggregated rollups maintained by the service itself (works on the Apache edition).

`install()` registers the ingest hook; `rollup_ddl(schema)` is the DDL this code expects (the
migrations create it; tests/test_migrations.py checks they match).
The read side only needs `catalog` (what exists) and the readiness kept in `rollup_meta`.
"""
from __future__ import annotations

from .ddl import rollup_ddl
from .maintain import ingest_statements
from .visits import install as install_visits


def install() -> None:
    """Fold every newly stored event into the rollups, in the same statement that stores it."""
    from ..ingestion.repository import register_insert_hook

    register_insert_hook(ingest_statements)
    install_visits()  # after the rollups: its advisory locks come last in every writer's lock order


__all__ = ["install", "rollup_ddl"]
