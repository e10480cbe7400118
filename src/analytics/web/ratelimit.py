"""Rate limits: per client on ingest (RATE_LIMIT_INGEST), per key on reads (RATE_LIMIT_READ),
with the `limits` library. Refused: 429 with Retry-After, before the body is parsed and before
any database work.

The limits are `@guard` dependencies (web/fastpath.py), declared on the routes after the access
guards (auth/guards.py), so that both the fast path and FastAPI's path enforce them and the
principal is known when they run:

- `limit_event` (POST /api/events/): cost 1, the body is not read.
- `limit_batch` (POST /api/events/batch): cost = the number of events, counted from the raw bytes
  (ingestion/bodies.py `count_events`) before anything is parsed. A batch bigger than the
  smallest window of RATE_LIMIT_INGEST could never pass: 413, not a 429 to retry forever.
- `limit_read` (the stats and seed reads): cost 1.

Who is counted: the principal's name when the request carries a key or token (an `ingest` key
has its own budget, apart from the address it sends from), else the client address
(web/client.py, TRUSTED_PROXIES aware). IPv6 addresses are counted per /64, the block one
subscriber gets: counting single addresses would give one host 2^64 budgets (and as many
counters in memory).

Strategy: the sliding window counter. It keeps two counters per client and window (O(1) memory
and time whatever the limit or the cost, where the moving window keeps one timestamp per event:
a 20,000/hour limit would hold 20,000 floats per client), and counts the previous window's
requests as if spread evenly over it, fading out as the window slides. A fixed window lets a
client send its whole limit at the end of one window and again at the start of the next (twice
the limit within moments); here, after a window's worth, the next requests are admitted at the
limit's average rate. It is an approximation: how evenly the previous window's requests really
fell decides how close it is to an exact (moving) window.

Storage: RATE_LIMIT_STORAGE_URL, `memory://` by default: counters in each worker process. The
kernel spreads connections over the WEB_CONCURRENCY workers, so a client gets between 1 and
WEB_CONCURRENCY times the limit (and each replica its own). `redis://host:port/db` (or
`rediss://`; Valkey too) shares the counters between workers and replicas; it is reached through
the asyncio client (redis-py), so a slow Redis never blocks the event loop. If the storage fails
(Redis down, or slower than 0.5 s) requests are let through, a warning is logged, and the storage
is not asked again for 5 s, so that no request waits on it meanwhile: the limiter protects the
service, it must not become the thing that stops it.
"""
from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..auth.principal import principal_of
from ..ingestion.bodies import count_events
from .client import client_ip, parse_networks
from .fastpath import guard

log = logging.getLogger("analytics.ratelimit")

# Counters one worker keeps in memory (4 per client with two windows: about 50,000 clients, some
# 50 MB). Past it the least recently used go first: a flood of new addresses can make the
# limiter forget idle clients, never grow the worker without bound.
MEMORY_MAX_COUNTERS = 200_000
OFF = frozenset({"off", "none", "false", "0", "no", "disabled"})
# A remote storage that does not answer within this is treated as failed (fail open), and not
# asked again for REMOTE_RETRY_S: while Redis is unreachable no request waits on it.
REMOTE_TIMEOUT_S = 0.5
REMOTE_RETRY_S = 5.0

# Called on every refusal with (policy, cost): "ingest" or "read", and the events or requests
# refused. The metrics part connects its counter here; a hook's failure never changes the answer.
on_refused: list[Callable[[str, int], None]] = []


class RateLimited(Exception):
    """A refusal, rendered by `install`'s exception handler (both paths use the app's handlers)."""

    def __init__(self, status: int, error: str, detail, retry_after: int | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.retry_after = status, error, detail, retry_after


# OpenAPI: every limited route documents its 429 (tests/test_schema_fuzz.py checks that every
# status a route answers is documented).
RESPONSE_429 = {
    "description": "Rate limited (RATE_LIMIT_INGEST per client address or key on ingest, "
                   "RATE_LIMIT_READ per key on reads); retry after Retry-After seconds",
    "headers": {"Retry-After": {"description": "Seconds until the limit admits this request again",
                                "schema": {"type": "integer"}}},
}


def parse_limits(setting: str, text: str) -> tuple[RateLimitItem, ...]:
    """'50/second;2000/minute' -> its items; 'off' (or empty) -> (). ValueError names the setting."""
    text = text.strip()
    if text.lower() in OFF or not text:
        return ()
    try:
        items = tuple(parse_many(text))
    except ValueError:
        raise ValueError(f"{setting}: not a rate limit such as '50/second;2000/minute' "
                         f"(or 'off'): {text!r}") from None
    if any(item.amount < 1 for item in items):
        raise ValueError(f"{setting}: every limit must admit at least 1: {text!r}")
    return items


@dataclass(frozen=True)
class Policy:
    name: str       # 'ingest' | 'read': the counters' namespace, and what on_refused hooks get
    setting: str    # the setting that states it, named in every refusal
    items: tuple[RateLimitItem, ...]

    @cached_property
    def windows(self) -> tuple[tuple[RateLimitItem, str, str, int], ...]:
        """(item, key head, key tail, expiry) per window: `head + who + tail` is limits' own
        key for `who` (RateLimitItem.key_for(name, who)), built without its per-call joins."""
        return tuple((item, f"{item.namespace}/{self.name}/",
                      f"/{item.amount}/{item.multiples}/{item.GRANULARITY.name}", item.get_expiry())
                     for item in self.items)

    @property
    def largest_cost(self) -> int:
        """The most one request can ever be charged: the smallest window's amount."""
        return min(item.amount for item in self.items)


def _describe(item: RateLimitItem) -> str:
    per = item.GRANULARITY.name if item.multiples == 1 else f"{item.multiples} {item.GRANULARITY.name}s"
    return f"{item.amount} per {per}"


class _Counters:
    """key -> [count, expires at], bounded, each counter expiring on its own: a heap ordered by
    expiry time (O(log n) per new counter; expired ones leave as new ones come), and when full
    the counter that would expire first goes. Plain dict lookups: a cachetools TLRUCache costs
    ~2 us per lookup, and a sliding-window hit makes three."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: dict[str, list] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def live(self, key: str, now: float) -> list | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            return None
        return entry

    def add(self, key: str, expiry: float, amount: int, now: float) -> int:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= now:
            self.expire(now)
            while len(self._entries) >= self.maxsize:
                self._drop_first()
            entry = self._entries[key] = [0, now + expiry]
            heapq.heappush(self._heap, (entry[1], key))
        entry[0] += amount
        return entry[0]

    def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._heap and self._heap[0][0] <= now:
            self._drop_first()

    def _drop_first(self) -> None:
        at, key = heapq.heappop(self._heap)
        entry = self._entries.get(key)
        if entry is not None and entry[1] == at:  # not a counter re-created since
            del self._entries[key]

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)  # its heap entry no longer matches: skipped when popped

    def clear(self) -> None:
        self._entries.clear()
        self._heap.clear()


class MemoryCounters(MemoryStorage):
    """limits' in-process storage, with the counters in a bounded table that expires them as it
    goes, and the sliding-window hit done in place.

    limits' own MemoryStorage starts a task after every hit that walks all its keys to expire
    them: measured, a request cost 0.3 ms with 1,000 clients counted and 3.9 ms with 10,000
    (bench/ratelimit.py --keys). Here each counter expires on its own (_Counters), and nothing
    walks the rest. The hit itself (`acquire_sliding_window_entry`, limits' arithmetic as is)
    reads the counters directly: through limits' storage methods (each wrapped in an
    error-translating coroutine, some twice) and a TLRUCache, the two windows of a read cost
    20-27 us of CPU, now 7-9 us (both versions in one process, alternating rounds; `python -m
    bench ratelimit --keys` gives this one's figure against limits' MemoryStorage). Nothing
    here suspends, so on one event loop a check and its increment cannot interleave."""

    def __init__(self, maxsize: int = MEMORY_MAX_COUNTERS) -> None:
        super().__init__()
        self.counters = _Counters(maxsize)

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int,
                                           amount: int = 1) -> bool:
        return self.take(key, limit, expiry, amount)

    def take(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """The sliding-window hit, without a coroutine: RateLimits calls it directly."""
        if amount > limit:
            return False
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous, current = self.counters.live(previous_key, now), self.counters.live(current_key, now)
        previous_count = previous[0] if previous else 0
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous_count else 0.0
        weighted = previous_count * previous_ttl / expiry + (current[0] if current else 0)
        if math.floor(weighted) + amount > limit:
            return False
        self.counters.add(current_key, 2 * expiry, amount, now)  # two windows, as limits does
        return True

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self.counters.add(key, expiry, amount, time.time())

    async def decr(self, key: str, amount: int = 1) -> int:
        entry = self.counters.live(key, time.time())
        if entry is None:
            return 0
        entry[0] = max(entry[0] - amount, 0)
        return entry[0]

    async def get(self, key: str) -> int:
        entry = self.counters.live(key, time.time())
        return entry[0] if entry is not None else 0

    async def get_expiry(self, key: str) -> float:
        entry = self.counters.live(key, time.time())
        return entry[1] if entry is not None else time.time()

    async def clear(self, key: str) -> None:
        self.counters.pop(key)

    async def reset(self) -> int | None:
        n = len(self.counters)
        self.counters.clear()
        return n


def storage_from_url(url: str) -> Storage:
    """memory:// (per worker) or redis:// / rediss:// (shared, asyncio client)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("memory", "async+memory"):
        return MemoryCounters()
    if scheme.startswith("async+"):
        scheme, url = scheme[len("async+"):], url[len("async+"):]
    if scheme in ("redis", "rediss", "redis+unix"):  # Valkey too: it speaks the same protocol
        # limits imports the client only here: a service on memory:// never loads it.
        from limits.aio.storage import RedisStorage
        return RedisStorage("async+" + url, implementation="redispy", wrap_exceptions=True,
                            socket_timeout=REMOTE_TIMEOUT_S, socket_connect_timeout=REMOTE_TIMEOUT_S)
    raise ValueError(f"RATE_LIMIT_STORAGE_URL: memory:// or redis://host:port/db, not {scheme}://")


class RateLimits:
    """The limiter of one worker: its storage, the two policies and how clients are named."""

    def __init__(self, storage: Storage, ingest: Policy, read: Policy, trusted_proxies,
                 batch_max_events: int) -> None:
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.remote = not isinstance(storage, MemoryStorage)
        # In-process counters are charged directly (_charge_memory): through limits' strategy,
        # three awaited calls and a key built per window cost a read 12-16 us, now ~4 us.
        self.memory = storage if isinstance(storage, MemoryCounters) else None
        self.ingest, self.read = ingest, read
        self.networks = trusted_proxies
        self.batch_max_events = batch_max_events
        self._warned_at = 0.0
        self._skip_until = 0.0  # a failed remote storage is not asked until then

    @classmethod
    def from_settings(cls, settings) -> "RateLimits":
        enabled = settings.rate_limit_enabled
        ingest = parse_limits("RATE_LIMIT_INGEST", settings.rate_limit_ingest) if enabled else ()
        read = parse_limits("RATE_LIMIT_READ", settings.rate_limit_read) if enabled else ()
        return cls(storage_from_url(settings.rate_limit_storage_url),
                   Policy("ingest", "RATE_LIMIT_INGEST", ingest),
                   Policy("read", "RATE_LIMIT_READ", read),
                   parse_networks(settings.trusted_proxies), settings.batch_max_events)

    def client(self, request: Request) -> str:
        """Whom to count: the principal when there is one, else the client address (IPv6: /64)."""
        principal = principal_of(request.scope)
        if principal is not None:
            return f"{principal.kind}:{principal.name}"
        addr = client_ip(request.scope, self.networks)
        if ":" in addr:
            addr = str(ipaddress.ip_network(f"{addr}/64", strict=False))
        return addr

    async def charge(self, policy: Policy, who: str, cost: int) -> None:
        """Take `cost` from each window of `policy` for `who`, or raise RateLimited (429)."""
        if self._skip_until and time.monotonic() < self._skip_until:
            return
        try:
            if self.memory is not None:
                refused = self._charge_memory(policy, who, cost)
            elif self.remote:
                async with asyncio.timeout(REMOTE_TIMEOUT_S * 2):
                    refused = await self._first_refused(policy, who, cost)
            else:
                refused = await self._first_refused(policy, who, cost)
            if refused is None:
                return
            stats = await self.limiter.get_window_stats(refused, policy.name, who)
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # noqa: BLE001 - any storage failure: let the request through
            self._storage_failed(exc)
            return
        _notify(policy.name, cost)
        raise RateLimited(429, "rate_limited",
                          f"Too many {'events' if policy.name == 'ingest' else 'requests'} from "
                          f"this client: at most {_describe(refused)} ({policy.setting}). Retry after "
                          f"{retry_after} s.", retry_after)

    async def _first_refused(self, policy: Policy, who: str, cost: int) -> RateLimitItem | None:
        # Windows are charged in turn and the first that refuses stops the rest (what
        # flask-limiter does): the windows already charged keep the charge, so a client that
        # keeps retrying over a long window's limit also uses up its short window.
        for item in policy.items:
            if not await self.limiter.hit(item, policy.name, who, cost=cost):
                return item
        return None

    def _charge_memory(self, policy: Policy, who: str, cost: int) -> RateLimitItem | None:
        """_first_refused on MemoryCounters, with the same keys and the same order."""
        take = self.memory.take  # type: ignore[union-attr]
        for item, head, tail, expiry in policy.windows:
            if not take(head + who + tail, item.amount, expiry, cost):
                return item
        return None

    def _storage_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._skip_until = now + REMOTE_RETRY_S
        if now - self._warned_at > 10:  # once per 10 s, not once per request
            self._warned_at = now
            log.warning("rate limit storage failed, requests are let through: %s: %s",
                        type(exc).__name__, exc)


def _notify(policy: str, cost: int) -> None:
    for hook in on_refused:
        try:
            hook(policy, cost)
        except Exception:  # noqa: BLE001
            log.exception("rate limit refusal hook failed")


def _limits(request: Request) -> RateLimits | None:
    return getattr(request.app.state, "rate_limits", None)


@guard
async def limit_event(request: Request) -> None:
    """Ingest, one event: cost 1 for the client (its body is not read here)."""
    rl = _limits(request)
    if rl is not None and rl.ingest.items:
        await rl.charge(rl.ingest, rl.client(request), 1)


@guard
async def limit_batch(request: Request) -> None:
    """Ingest, a batch: its events, counted from the raw bytes before any parsing. The body read
    here is the one the endpoint uses (Starlette keeps it on the request)."""
    rl = _limits(request)
    if rl is None or not rl.ingest.items:
        return
    body = await request.body()
    cost = min(count_events(body, request.headers.get("content-type", ""), rl.batch_max_events),
               rl.batch_max_events)  # more is refused (413) by the endpoint, before parsing
    if cost > rl.ingest.largest_cost:
        _notify("ingest", cost)
        raise RateLimited(413, "batch_too_large", [{
            "loc": ["body"], "type": "over_rate_limit", "limit": rl.ingest.largest_cost,
            "msg": f"the batch has {cost} events, more than RATE_LIMIT_INGEST admits at once "
                   f"({rl.ingest.largest_cost}): send smaller batches"}])
    await rl.charge(rl.ingest, rl.client(request), cost)


@guard
async def limit_read(request: Request) -> None:
    """Reads: cost 1 for the key (or, without one, the client address)."""
    rl = _limits(request)
    if rl is not None and rl.read.items:
        await rl.charge(rl.read, rl.client(request), 1)


def install(app, settings) -> None:
    """The 429/413 rendering, and the limiter built from the settings (a bad RATE_LIMIT_* value
    stops the start with a message naming it)."""
    app.state.rate_limits = RateLimits.from_settings(settings)

    async def _refused(_: Request, exc: RateLimited) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status,
                            headers=headers)

    app.add_exception_handler(RateLimited, _refused)
