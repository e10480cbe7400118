"""The cheap refusals of ingestion/bodies.py on their own: nesting depth found by byte operations
(strings, escapes and brackets inside strings included), and batch item counts that stop at the
limit. Their answers through the real server are in test_hostile_writes.py."""
from __future__ import annotations

import json

import pytest

from analytics.ingestion import bodies
from analytics.ingestion.bodies import MAX_DEPTH, BodyRejected, too_deep


def nested(depth: int, inner: object = 1) -> object:
    value = inner
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [1, 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100, 400])
@pytest.mark.parametrize("inner", [1, "plain", "[{[{", '"]}\\', "a,b"], ids=["num", "str", "open", "close", "comma"])
def test_depth_is_exact_whatever_the_strings_hold(depth, inner):
    body = json.dumps(nested(depth, inner)).encode()
    assert too_deep(body) == (depth > MAX_DEPTH)


def test_strings_full_of_brackets_are_not_nesting():
    body = json.dumps([{"page": "[" * 500 + "{" * 500, "d": "\\\"[" * 100}] * 50).encode()
    assert not too_deep(body)


@pytest.mark.parametrize("body", [b"[" * 5000, b"{" * 5000, b'{"a":' * 2000, b"[" * 33 + b"]" * 10,
                                  b'{"page": "/"}\n' + b"[" * 40])
def test_malformed_deep_bodies_are_too_deep(body):
    assert too_deep(body)


@pytest.mark.parametrize("body", [b"]" * 5000, b"[]" * 5000, b"][" * 5000, b""])
def test_unbalanced_shallow_bodies_are_left_to_the_parser(body):
    assert not too_deep(body)


def _batch(item: str, n: int) -> bytes:
    return ("[" + ",".join([item] * n) + "]").encode()


@pytest.mark.parametrize("item", ['{}', '{"page":"/a,b","x":"[1]"}', '1', '"x,y"', 'null',
                                  '{"page":"/","props":{"a":[1,{"b":2}]}}', '[[[]]]'])
@pytest.mark.parametrize("n, refused", [(999, False), (1000, False), (1001, True), (50_000, True)])
def test_item_count_at_and_over_the_limit(item, n, refused):
    for ndjson in (False, True):
        body = _batch(item, n) if not ndjson else ("\n".join([item] * n) + "\n").encode()
        try:
            bodies._refuse_hostile_batch(body, ndjson, 1000)
            got = False
        except BodyRejected as exc:
            assert exc.status == 413, exc.errors
            got = True
        assert got == refused, (item, n, ndjson)


def test_an_object_with_many_keys_is_not_a_batch_of_many_items():
    body = json.dumps({f"k{i}": i for i in range(5000)}).encode()
    bodies._refuse_hostile_batch(body, False, 1000)  # left to the parser: "expected a JSON array"


@pytest.mark.parametrize("body", [b'{"page":"/","duration":' + b"9" * 5000 + b"}",
                                  b'{"page":"/","extra":' + b"9" * 5000 + b"}"])
def test_huge_integers_are_a_422_that_says_so(body):
    from datetime import timedelta

    from analytics.ingestion.enrich import UserAgentCache
    from analytics.ingestion.pipeline import Enricher

    enricher = Enricher(UserAgentCache(10), timedelta(days=7), timedelta(seconds=60))
    for call in (lambda: bodies.parse_event(body, enricher),
                 lambda: bodies.batch_records(b"[" + body + b"]", "application/json", 1000, enricher),
                 lambda: bodies.batch_records(body, "application/x-ndjson", 1000, enricher)):
        with pytest.raises(BodyRejected) as caught:
            call()
        assert caught.value.status == 422
        assert "digits" in caught.value.errors[0]["msg"]
