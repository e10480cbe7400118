"""The service with the user-agent classification it had before issue 9: user-agents' own
parse (ua-parser's legacy pure-Python parser, every rule tried in turn, on the event loop).
Only bench/ua.py starts it, to measure the old parser in the same run as the new one:

    gunicorn -c boot/gunicorn.conf.py bench.legacy_ua_app:app   (PYTHONPATH=src:.)
"""
from analytics.ingestion import enrich

# UserAgentCache.lookup calls the module's classify: the old path, answers unchanged.
enrich.classify = enrich.classify_reference

from analytics.main import create_app  # noqa: E402

app = create_app()
