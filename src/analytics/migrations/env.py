"""Alembic environment: always run through analytics.migrations, which hands in a connection
(already in the transaction that holds the bootstrap lock) and the settings."""
from __future__ import annotations

from alembic import context

config = context.config
if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `make migrate`")
connection = config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `python -m analytics.migrations` (or `make migrate`), "
                     "not the alembic command: it supplies the connection and DB_SCHEMA")

context.configure(connection=connection, target_metadata=None,
                  version_table_schema=config.attributes["schema"], transactional_ddl=True)
with context.begin_transaction():  # joins the caller's transaction; it commits
    context.run_migrations()
