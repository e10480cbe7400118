"""Rate limits (issue 10, part 4), on the real server in both fast-path modes: a burst over the
ingest limit is answered 429 with Retry-After and nothing beyond the limit is stored; a batch
costs its events; each client address has its own budget; reads are limited per key; a refused request is answered before its body is parsed.

The server trusts 127.0.0.1 as a proxy, so each test speaks for its own client address through
X-Forwarded-For and starts with a full budget. Windows are an hour long: the counts do not
depend on how fast the machine is."""
from __future__ import annotations

import itertools
import json
import uuid

import httpx
import pytest

from support import Server, connect, drop_schema, new_schema_name

INGEST_LIMIT = 5
READ_LIMIT = 3
_addresses = (f"198.51.100.{i}" for i in itertools.count(1))


@pytest.fixture(scope="module", params=["fast", "plain"])
def srv(request, db_url):
    schema = new_schema_name(f"ratelimit_{request.param}")
    s = Server(db_url, schema, env={
        "FAST_PATHS": str(request.param == "fast").lower(),
        "RATE_LIMIT_INGEST": f"{INGEST_LIMIT}/hour", "RATE_LIMIT_READ": f"{READ_LIMIT}/hour",
        "TRUSTED_PROXIES": "127.0.0.1/32"}).start()
    yield s
    s.stop()
    drop_schema(db_url, schema)


@pytest.fixture()
def client(srv):
    """A client speaking for an address no other test uses."""
    with httpx.Client(base_url=srv.url, timeout=30,
                      headers={"X-Forwarded-For": next(_addresses)}) as c:
        yield c


@pytest.fixture()
def db(db_url, srv):
    conn = connect(db_url, srv.env["DB_SCHEMA"])
    yield conn
    conn.close()


def _stored(db, page: str) -> int:
    return db.execute("SELECT count(*) FROM events WHERE page = %s", (page,)).fetchone()[0]


def _assert_429(r: httpx.Response, setting: str) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"] == "rate_limited" and setting in body["detail"]
    assert int(r.headers["Retry-After"]) >= 1


def test_burst_over_the_ingest_limit_is_refused_and_not_stored(client, db):
    page = f"/burst-{uuid.uuid4().hex[:8]}"
    answers = [client.post("/api/events/", json={"page": page}) for _ in range(INGEST_LIMIT + 7)]
    codes = [r.status_code for r in answers]
    assert codes == [201] * INGEST_LIMIT + [429] * 7, codes
    _assert_429(answers[-1], "RATE_LIMIT_INGEST")
    assert _stored(db, page) == INGEST_LIMIT


def test_a_batch_costs_its_events(client, db):
    page = f"/batch-{uuid.uuid4().hex[:8]}"

    def batch(n: int) -> httpx.Response:
        return client.post("/api/events/batch", json=[{"page": page}] * n)

    assert batch(3).status_code == 201                   # 3 of 5
    _assert_429(batch(3), "RATE_LIMIT_INGEST")           # 6 > 5: refused whole, nothing taken
    ndjson = f'{{"page": "{page}"}}\n\n'                 # NDJSON counts its non-blank lines
    assert client.post("/api/events/batch", content=ndjson,
                       headers={"content-type": "application/x-ndjson"}).status_code == 201  # 4
    _assert_429(batch(2), "RATE_LIMIT_INGEST")           # 6 > 5
    assert client.post("/api/events/", json={"page": page}).status_code == 201  # 5
    _assert_429(client.post("/api/events/", json={"page": page}), "RATE_LIMIT_INGEST")
    assert _stored(db, page) == INGEST_LIMIT


def test_a_batch_bigger_than_the_limit_is_413_not_a_429_to_retry_forever(client, db):
    page = f"/huge-{uuid.uuid4().hex[:8]}"
    r = client.post("/api/events/batch", json=[{"page": page}] * (INGEST_LIMIT + 1))
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "batch_too_large" and "RATE_LIMIT_INGEST" in r.text
    assert "Retry-After" not in r.headers
    assert _stored(db, page) == 0


def test_each_client_address_has_its_own_budget(srv, client, db):
    page = f"/own-{uuid.uuid4().hex[:8]}"
    for _ in range(INGEST_LIMIT):
        assert client.post("/api/events/", json={"page": page}).status_code == 201
    _assert_429(client.post("/api/events/", json={"page": page}), "RATE_LIMIT_INGEST")
    # Another address behind the same (trusted) proxy: a full budget of its own.
    other = {"X-Forwarded-For": next(_addresses)}
    assert httpx.post(srv.url + "/api/events/", json={"page": page}, headers=other).status_code == 201
    # A client cannot buy a new budget by writing its own X-Forwarded-For entry: the proxy
    # appends the address it saw, and that rightmost untrusted address is the one counted.
    spoofed = {"X-Forwarded-For": f"203.0.113.99, {client.headers['X-Forwarded-For']}"}
    _assert_429(httpx.post(srv.url + "/api/events/", json={"page": page}, headers=spoofed),
                "RATE_LIMIT_INGEST")
    assert _stored(db, page) == INGEST_LIMIT + 1


def test_refused_before_the_body_is_parsed(client):
    """Over the limit, a body that is not even JSON gets the 429, not the parser's 422."""
    for _ in range(INGEST_LIMIT):
        client.post("/api/events/", json={"page": "/x"})
    _assert_429(client.post("/api/events/", content=b'{"page": ',
                            headers={"content-type": "application/json"}), "RATE_LIMIT_INGEST")
    _assert_429(client.post("/api/events/batch", content=b'[{"page": "/"}, nonsense',
                            headers={"content-type": "application/json"}), "RATE_LIMIT_INGEST")


def test_reads_are_limited_per_key_and_apart_from_ingest(srv, client):
    """Every read route shares the key's read budget, whatever address it comes from; another
    key has its own; ingest has used none of it; a request without a key is refused by the
    access guard first and costs no budget."""
    event = client.post("/api/events/", json={"page": "/r"}).json()
    reads = ["/api/v1/stats/totals", "/api/events/?duration=1%20hour", f"/api/events/{event['id']}/"]
    assert client.get(reads[0]).status_code == 401  # no key: the guard's 401, not a 429
    keyed = {"X-Forwarded-For": next(_addresses), **srv.headers}
    assert [client.get(path, headers=keyed).status_code for path in reads] == [200] * READ_LIMIT
    for path in reads + ["/api/v1/stats/timeseries", "/api/v1/stats/breakdown?group_by=page"]:
        _assert_429(client.get(path, headers=keyed), "RATE_LIMIT_READ")
    # the same key from another address: the key's budget, spent
    _assert_429(httpx.get(srv.url + reads[0], headers={**srv.headers,
                                                       "X-Forwarded-For": next(_addresses)}),
                "RATE_LIMIT_READ")
    # another key (the admin key reads too): a budget of its own
    assert httpx.get(srv.url + reads[0], headers=srv.admin_headers).status_code == 200
    # the ingest budget is separate: 4 of 5 left
    assert client.post("/api/events/", json={"page": "/r"}).status_code == 201


def test_every_limited_route_documents_its_429(srv):
    spec = httpx.get(srv.url + "/openapi.json").json()
    limited = {("/api/events/", "post"), ("/api/events/batch", "post"), ("/api/events/", "get"),
               ("/api/events/{event_id}/", "get"), ("/api/v1/stats/timeseries", "get"),
               ("/api/v1/stats/breakdown", "get"), ("/api/v1/stats/totals", "get"),
               ("/api/v1/events/export", "get")}
    for path, method in limited:
        doc = spec["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in doc["headers"], (path, method)
    assert "429" not in json.dumps(spec["paths"]["/healthz"])


# The parts without a server: settings, whom a request is counted as, the batch count.

def test_settings_off_and_bad_values_name_the_setting():
    from analytics.web.ratelimit import parse_limits
    assert parse_limits("RATE_LIMIT_READ", "off") == () == parse_limits("RATE_LIMIT_READ", " ")
    assert [i.amount for i in parse_limits("RATE_LIMIT_INGEST", "50/second;2000/minute")] == [50, 2000]
    with pytest.raises(ValueError, match="RATE_LIMIT_INGEST"):
        parse_limits("RATE_LIMIT_INGEST", "fifty a second")
    with pytest.raises(ValueError, match="RATE_LIMIT_INGEST"):
        parse_limits("RATE_LIMIT_INGEST", "0/second")


def test_counted_as_the_principal_else_the_address_and_ipv6_per_64():
    from starlette.requests import Request

    from analytics.auth.principal import READ, Principal, set_principal
    from analytics.web.ratelimit import Policy, RateLimits, storage_from_url

    rl = RateLimits(storage_from_url("memory://"), Policy("ingest", "RATE_LIMIT_INGEST", ()),
                    Policy("read", "RATE_LIMIT_READ", ()), (), 1000)

    def request(peer: str) -> Request:
        return Request({"type": "http", "headers": [], "client": (peer, 5000)})

    assert rl.client(request("192.0.2.7")) == "192.0.2.7"
    assert rl.client(request("2001:db8:1:2:aaaa::1")) == rl.client(request("2001:db8:1:2:bbbb::9")) \
        == "2001:db8:1:2::/64"
    keyed = request("192.0.2.7")
    set_principal(keyed.scope, Principal("key", "dashboard", frozenset({READ})))
    assert rl.client(keyed) == "key:dashboard"


@pytest.mark.parametrize("body, content_type, events", [
    (b'[{"page": "/"}, {"page": "/a,b[c]{d}"}]', "application/json", 2),
    (b' [ {"a": [1, 2, {"b": [3]}]}, {"c": 1} , {} ] ', "application/json", 3),
    (b'[{"p": "\\"]"}, {"q": 2}]', "application/json", 2),
    (b'{"page": "/"}\n\n{"page": "/x"}\n', "application/x-ndjson; charset=utf-8", 2),
    (b'[' + b','.join([b'{"page":"/"}'] * 5000) + b']', "application/json", 1001),  # stops at limit + 1
    (b'[]', "application/json", 1), (b'{"page": "/"}', "application/json", 1),
    (b'[{"a":1},', "application/json", 1), (b'', "application/json", 1),
])
def test_batch_events_counted_from_the_bytes(body, content_type, events):
    from analytics.ingestion.bodies import count_events
    assert count_events(body, content_type, 1000) == events


def test_memory_counters_are_bounded_and_expire():
    """Per-worker counters: never more than the bound, whatever the number of clients, and gone
    once their window is over (limits' own memory storage instead walks every key after each
    hit: bench/ratelimit.py --keys)."""
    import asyncio
    import time

    from limits import parse
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    from analytics.web.ratelimit import MemoryCounters

    async def run():
        storage = MemoryCounters(maxsize=50)
        limiter = SlidingWindowCounterRateLimiter(storage)
        item = parse("2/second")
        for k in range(500):
            assert await limiter.hit(item, "ingest", f"10.0.{k}")
        assert len(storage.counters) <= 50
        assert [await limiter.hit(item, "ingest", "a") for _ in range(3)] == [True, True, False]
        await asyncio.sleep(2.1)  # counters live two windows (the sliding window's previous one)
        storage.counters.expire()
        assert len(storage.counters) == 0
        assert await limiter.hit(item, "ingest", "a")

    asyncio.run(run())


def test_the_direct_memory_charge_uses_limits_own_keys_and_windows():
    """RateLimits charges in-process counters without limits' strategy (_charge_memory): what it
    charges is what limits' strategy reads for the same client (the refusal's Retry-After comes
    from there), window by window, and the first full window refuses."""
    import asyncio

    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    from analytics.web.ratelimit import MemoryCounters, Policy, RateLimited, RateLimits, parse_limits

    async def run():
        storage = MemoryCounters()
        read = Policy("read", "RATE_LIMIT_READ", parse_limits("RATE_LIMIT_READ", "3/minute;100/hour"))
        rl = RateLimits(storage, Policy("ingest", "RATE_LIMIT_INGEST", ()), read, (), 1000)
        assert rl.memory is storage
        limiter = SlidingWindowCounterRateLimiter(storage)
        for item, head, tail, _ in read.windows:
            assert head + "key:dash" + tail == item.key_for("read", "key:dash")
        for _ in range(2):
            await rl.charge(read, "key:dash", 1)
        minute, hour = read.items
        assert (await limiter.get_window_stats(minute, "read", "key:dash")).remaining == 1
        assert (await limiter.get_window_stats(hour, "read", "key:dash")).remaining == 98
        await limiter.hit(minute, "read", "key:dash")  # limits' own path: the same counter
        try:
            await rl.charge(read, "key:dash", 1)
            raise AssertionError("the minute's window is full")
        except RateLimited as exc:
            assert exc.status == 429 and "3 per minute" in exc.detail and exc.retry_after >= 1
        assert (await limiter.get_window_stats(hour, "read", "key:dash")).remaining == 98  # not charged past a refusal
        await rl.charge(read, "key:other", 1)  # another client: its own counters

    asyncio.run(run())


def test_rate_limit_enabled_false_turns_both_off_and_bad_storage_is_named():
    import dataclasses

    from analytics.config import get_settings
    from analytics.web.ratelimit import RateLimits

    base = dataclasses.replace(get_settings(), rate_limit_ingest="5/hour", rate_limit_read="5/hour")
    on = RateLimits.from_settings(base)
    assert on.ingest.items and on.read.items
    off = RateLimits.from_settings(dataclasses.replace(base, rate_limit_enabled=False))
    assert off.ingest.items == () == off.read.items
    with pytest.raises(ValueError, match="RATE_LIMIT_STORAGE_URL"):
        RateLimits.from_settings(dataclasses.replace(base, rate_limit_storage_url="mongodb://x"))
