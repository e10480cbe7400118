"""For revision scripts: the schema being migrated, and SQL run in it.

Inside a revision, `search_path` is the service's schema first, so unqualified names
(`ALTER TABLE events ...`, `op.add_column("events", ...)`) resolve there. Statements that must
name the schema (function bodies, which run later under another search_path) write it as
"__schema__" and go through `execute()`, which substitutes the quoted schema name.
"""
from __future__ import annotations

from alembic import context, op
from psycopg import sql

SCHEMA_TOKEN = '"__schema__"'


def schema() -> str:
    return context.config.attributes["schema"]


def settings():
    return context.config.attributes["settings"]


def _driver():
    return op.get_bind().connection.driver_connection


def execute(statement: str | sql.Composable) -> None:
    """Run one statement as written (no bind-parameter parsing: `::`, `%` and `:x` stay as is)."""
    if isinstance(statement, sql.Composable):
        text = statement.as_string(_driver())
    else:
        text = statement.replace(SCHEMA_TOKEN, sql.Identifier(schema()).as_string(_driver()))
    op.get_bind().exec_driver_sql(text)
