"""share scope: dashboard share links

Issue 11, part 4: an API key may have the scope `share`, a read-only token limited to the stats
routes (what /dashboard reads), carried in a share link's URL fragment. Only the CHECK on
api_keys.scope changes (a small table: instant).

Revision ID: 0010
Revises: 0009 (written on 0007; re-chained at merge)
Create Date: 2026-12-02
"""
from __future__ import annotations

from analytics.migrations import helpers

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    helpers.execute("""ALTER TABLE "__schema__".api_keys DROP CONSTRAINT IF EXISTS api_keys_scope_check,
        ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('read', 'ingest', 'admin', 'share'))""")


def downgrade() -> None:
    helpers.execute("""DELETE FROM "__schema__".api_keys WHERE scope = 'share'""")
    helpers.execute("""ALTER TABLE "__schema__".api_keys DROP CONSTRAINT IF EXISTS api_keys_scope_check,
        ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('read', 'ingest', 'admin'))""")
