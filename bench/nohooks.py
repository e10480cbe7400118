"""The service without its insert hooks, for `python -m bench ingest`: what single events reach
when storing an event is the COPY alone (no rollups, no session or visitor state, no visits).
It lives only here, never in the service: the events it stores are in no rollup (the benchmark
drops its schema, or with --history rebuilds the rollups of the range it wrote).

Everything else is the service as it runs (keys, limits, enrichment, access log, metrics, the
writer's group commit), under the same gunicorn command:

    gunicorn -c boot/gunicorn.conf.py bench.nohooks:app   (PYTHONPATH=src:.)
"""
from __future__ import annotations

import analytics.rollups as _rollups

# main.py registers the hooks through this name at create_app(): replaced before it is imported.
_rollups.install = lambda: None

from analytics.main import create_app  # noqa: E402

app = create_app()
