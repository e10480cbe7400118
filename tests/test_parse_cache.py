"""The fast path keeps parsed questions by query string (aggregation/router.py `_parsed`): the
same string gives the same question until the default end moves; a refused one is not kept."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request

from analytics.aggregation import query, router
from analytics.config import Settings
from analytics.web.errors import ApiError


def _request(query: bytes) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(settings=Settings()))
    return Request({"type": "http", "method": "GET", "path": "/api/v1/stats/totals", "headers": [],
                    "query_string": query, "app": app})


@pytest.fixture(autouse=True)
def empty_cache():
    router._PARSED.clear()
    yield
    router._PARSED.clear()


def test_same_string_same_question_until_the_default_end_moves(monkeypatch):
    q1 = router._parsed("totals", _request(b"metrics=events"))
    assert router._parsed("totals", _request(b"metrics=events")) is q1
    other = router._parsed("totals", _request(b"metrics=visits"))
    assert other is not q1 and other.metrics == ("visits",)
    # A quarter hour later an open range ends later: a new question, not the kept one.
    later = router.default_end(datetime.now(timezone.utc)) + timedelta(minutes=15)
    for module in (router, query):  # the cache's key and the query model's open range alike
        monkeypatch.setattr(module, "default_end", lambda now: later)
    q2 = router._parsed("totals", _request(b"metrics=events"))
    assert q2 is not q1 and q2.end == later and q2.end - q1.end == timedelta(minutes=15)


@pytest.mark.parametrize("query", [b"metrics=nope", b"timezone=Mars/Olympus", b"colour=red"])
def test_a_refused_question_is_not_kept(query):
    for _ in range(2):
        with pytest.raises((RequestValidationError, ApiError)):
            router._parsed("totals", _request(query))
    assert len(router._PARSED) == 0


def test_long_query_strings_are_parsed_each_time():
    long = b"metrics=events&" + b"&".join(b"page=/a-longer-page-path-%d" % i for i in range(100))
    assert len(long) > router._PARSED_MAX_QUERY
    q1 = router._parsed("totals", _request(long))
    assert router._parsed("totals", _request(long)) is not q1 and len(router._PARSED) == 0
