"""The app of `python -m bench deferred`: the service whose COMMIT only queues the rows it stored
(`pending_fold`, a table the benchmark creates), instead of folding them into the rollups and
visits. The benchmark's folder folds the queue once a second. Bench only: it measures what a
deferred fold would save, it is not how the service works.

    gunicorn -c boot/gunicorn.conf.py bench.deferred_app:app   (PYTHONPATH=src:.)
"""
from __future__ import annotations

from psycopg import sql

import analytics.rollups as _rollups
from analytics.ingestion.repository import register_insert_hook


def _queue() -> list:
    return [sql.SQL("INSERT INTO pending_fold SELECT * FROM ins")]


# main.py registers the hooks through this name at create_app(): replaced before it is imported.
_rollups.install = lambda: register_insert_hook(_queue)

from analytics.main import create_app  # noqa: E402

app = create_app()
