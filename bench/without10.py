"""The service without the database work of issue 10, for `python -m bench before_after
--issue-10-off`: the unique-visitor state (`rollup_visitors`) and its `vis` rollups are not
maintained. With the switches of bench/before_after.py (rate limits, metrics and read keys off)
this is this tree as it would be without issue 10, so that one run says what issue 10 costs,
apart from what issues 11 and 12 added to every event since.

What stays: the visitor hash itself (issue 11's visits are keyed by it; it costs ~1 us per event
in-process, `python -m bench visitors`) and the access log's client hash. It lives only here,
never in the service (its schema's `vis` rollups stay empty; the benchmark drops the schema).

    gunicorn -c boot/gunicorn.conf.py bench.without10:app   (PYTHONPATH=src:.)
"""
from __future__ import annotations

from analytics.rollups import maintain as _maintain
from analytics.rollups.sessions import SESSIONS

# The ingest hook reads SUBJECTS when it first composes its statements (at the first flush).
_maintain.SUBJECTS = (SESSIONS,)
_maintain._ingest_statements.cache_clear()

from analytics.main import create_app  # noqa: E402

app = create_app()
