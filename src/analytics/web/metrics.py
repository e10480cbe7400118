"""Prometheus metrics: every metric is defined here, once; `GET /metrics` serves them.

prometheus-client in multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (boot/gunicorn.conf.py
sets a fresh one per gunicorn master before any worker imports this module): each worker writes
its values to memory-mapped files in that directory and a scrape, answered by any worker, sums
them all. Without it (plain uvicorn) the process's own registry is served.

Cost, on purpose small: per request one counter increment and one histogram observation (in
RequestContextMiddleware, which sees the fast path and FastAPI's path alike); per ingest request
a few increments; per COMMIT one observation. These hot-path ones are tallied in the worker and
written at most a second later (`Tally`); the rare ones (refusals, stats) are written at once.
Gauges that describe a worker's state (writer queue, circuit breaker, pool connections) are
sampled once a second by `Sampler`, not updated where the state changes (the writer's hot loop).

Label values are bounded: a request is labelled by its route TEMPLATE (`/api/events/{event_id}/`),
never its path; a path no route serves is `unmatched`, an unusual method `other`.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from bisect import bisect_left
from typing import Sequence

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, multiprocess)

from ..auth.guards import require_admin

log = logging.getLogger("analytics.metrics")

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# -- the metrics ------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "analytics_http_requests_total", "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "analytics_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by method, route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

EVENTS_ACCEPTED = Counter(
    "analytics_events_accepted_total", "Events that passed validation and were handed to the writer",
    ["endpoint"])
EVENTS_STORED = Counter(
    "analytics_events_stored_total", "Events committed as new rows", ["endpoint"])
EVENTS_DUPLICATE = Counter(
    "analytics_events_duplicate_total", "Events whose (id, time) was already stored (answered 2xx, "
                                        "not stored again)", ["endpoint"])
INGEST_REFUSED = Counter(
    "analytics_ingest_refused_total",
    "Ingest requests refused, by reason (a batch is refused whole): validation (422), too_large "
    "(413), database_limit (422), overloaded (503), unavailable (503)", ["endpoint", "reason"])
RATE_LIMITED = Counter(
    "analytics_rate_limited_total", "Requests refused by a rate limit (429), by limit", ["kind"])

WRITER_QUEUE = Gauge(
    "analytics_writer_queue_events", "Events accepted and waiting for the writer (all workers)",
    multiprocess_mode="livesum")
WRITER_CIRCUIT_OPEN = Gauge(
    "analytics_writer_circuit_open", "Workers whose writer circuit breaker is open (database "
                                     "unreachable: writes refused at once)", multiprocess_mode="livesum")
COMMIT_EVENTS = Histogram(
    "analytics_writer_commit_events", "Events per COMMIT of the group-commit writer",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000))
POOL_IN_USE = Gauge(
    "analytics_db_pool_connections_in_use", "Database connections lent out, by pool (all workers)",
    ["pool"], multiprocess_mode="livesum")
POOL_SIZE = Gauge(
    "analytics_db_pool_connections", "Database connections open, by pool (all workers)", ["pool"],
    multiprocess_mode="livesum")
POOL_WAITING = Gauge(
    "analytics_db_pool_requests_waiting", "Requests waiting for a connection, by pool (all workers)",
    ["pool"], multiprocess_mode="livesum")

STATS_CACHE = Counter(
    "analytics_stats_cache_total", "Stats answers by how the answer cache served them: hit, miss "
                                   "(a query ran), shared (an identical question's query answered)",
    ["result"])
STATS_SOURCE = Counter(
    "analytics_stats_source_total", "Stats questions answered by a query, by each source it read "
                                    "(a rollup table, or raw events)", ["source"])

_CHILDREN: dict[tuple, object] = {}


class Tally:
    """The hot path's increments, kept in this worker and written to the metrics at most a
    second later (`flush`: by the Sampler every second, before this worker answers a scrape, and
    at shutdown). In multiprocess mode every increment of prometheus-client is a locked write to
    a memory-mapped file, 3 us for a counter and 6 us for a histogram: five of them per single
    event were 4% of a worker's CPU. A dict update here costs a tenth of that.

    Histograms are tallied per bucket, in prometheus-client's own layout (the child's
    `_upper_bounds`, `_buckets`, `_sum`, which its `observe` uses the same way). Only the event
    loop's thread calls it."""

    def __init__(self) -> None:
        self.counts: dict = {}  # counter child -> amount
        self.hists: dict = {}   # histogram child -> [sum, count per bucket]

    def inc(self, child, amount: float = 1) -> None:
        self.counts[child] = self.counts.get(child, 0) + amount

    def observe(self, child, value: float) -> None:
        h = self.hists.get(child)
        if h is None:
            h = self.hists[child] = [0.0, [0] * len(child._upper_bounds)]
        h[0] += value
        h[1][bisect_left(child._upper_bounds, value)] += 1  # observe: the first bound >= value

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        hists, self.hists = self.hists, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, (total, buckets) in hists.items():
            for i, n in enumerate(buckets):
                if n:
                    child._buckets[i].inc(n)
            child._sum.inc(total)


TALLY = Tally()


def _child(metric, *labels: str):
    """metric.labels(*labels), kept: labels() costs as much as the increment itself. Bounded:
    every label value given here is one of a fixed set named in the code."""
    key = (metric, labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


# -- switch ------------------------------------------------------------------------------------
_enabled = True


def configure(enabled: bool) -> None:
    """METRICS_ENABLED=false: record nothing (the metrics still exist, at zero)."""
    global _enabled
    _enabled = enabled


# -- requests ----------------------------------------------------------------------------------
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Ingest routes, whose 413s (refused by the body-size middleware before any handler runs) are
# counted here as refusals; every other refusal is counted where it is decided.
_INGEST = {("POST", "/api/events/"): "single", ("POST", "/api/events/batch"): "batch"}


class RouteNames:
    """Path -> route template, from the app's own routes (built on first use). Static paths are
    one dict lookup; templated paths try each templated route's regex."""

    def __init__(self) -> None:
        self._static: dict[str, str] | None = None
        self._templated: list = []

    def _build(self, app) -> None:
        static: dict[str, str] = {}
        for route in iter_route_contexts(app.router.routes):
            path = getattr(route, "path", None)
            if path is None:
                continue
            if getattr(route, "param_convertors", None):
                self._templated.append((route.path_regex, path))
            else:
                static[path] = path
        self._static = static

    def name(self, app, path: str) -> str:
        if self._static is None:
            self._build(app)
        hit = self._static.get(path)
        if hit is not None:
            return hit
        for regex, template in self._templated:
            if regex.match(path):
                return template
        return UNMATCHED


class RequestMetrics:
    """`observe(scope, status, seconds)`: called by RequestContextMiddleware once per answer."""

    def __init__(self) -> None:
        self.routes = RouteNames()
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, scope, status: int, seconds: float) -> None:
        if not _enabled:
            return
        method = scope.get("method", "")
        if method not in _METHODS:
            method = "other"
        route = self.routes.name(scope["app"], scope.get("path", ""))
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # bounded: methods x routes x the statuses the app answers
            labels = (method, route, str(status))
            children = self._children[key] = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
        TALLY.inc(children[0])
        TALLY.observe(children[1], seconds)
        if status == 413 and (method, route) in _INGEST:
            refused(_INGEST[(method, route)], "too_large")


# -- ingest ------------------------------------------------------------------------------------
def accepted(endpoint: str, n: int) -> None:
    if _enabled:
        TALLY.inc(_child(EVENTS_ACCEPTED, endpoint), n)


def written(endpoint: str, new_flags: Sequence[bool]) -> None:
    """After COMMIT: per event, whether it was new (stored) or a duplicate."""
    if not _enabled:
        return
    stored = sum(new_flags)
    if stored:
        TALLY.inc(_child(EVENTS_STORED, endpoint), stored)
    if len(new_flags) - stored:
        TALLY.inc(_child(EVENTS_DUPLICATE, endpoint), len(new_flags) - stored)


def refused(endpoint: str, reason: str) -> None:
    if _enabled:
        TALLY.inc(_child(INGEST_REFUSED, endpoint, reason))


def count_rate_limited(kind: str, cost: int = 1) -> None:
    """One request refused by the rate limit `kind` ("ingest" or "read"); the limiter calls it
    (its refusal hooks pass `cost`, the events or requests the refused request carried: the
    counter counts refused requests)."""
    if _enabled:
        TALLY.inc(_child(RATE_LIMITED, kind))


def commit(n_events: int) -> None:
    """One COMMIT of the writer, of `n_events` events."""
    if _enabled:
        TALLY.observe(COMMIT_EVENTS, n_events)


# -- stats -------------------------------------------------------------------------------------
def stats_cache(how: str) -> None:
    """`how`: hit, miss or shared (Answer.how, the X-Cache header)."""
    if _enabled:
        TALLY.inc(_child(STATS_CACHE, how))


def stats_sources(plans) -> None:
    """A stats question answered by a query: count each source (table, or raw) its plans read
    once. Bounded: the rollup tables are a fixed catalogue."""
    if not _enabled:
        return
    names = {p.table or "raw" for plan in plans for s in plan.sources().values() for p in s.pieces}
    for name in names:
        TALLY.inc(_child(STATS_SOURCE, name))


# -- gauges sampled per worker -----------------------------------------------------------------
class Sampler:
    """Sets this worker's gauges from its writer and pools every `interval` seconds (and right
    before a scrape this worker answers). In multiprocess mode a worker's gauges leave the sums
    when gunicorn marks it dead."""

    def __init__(self, state, interval: float = 1.0) -> None:
        self.state = state
        self.interval = interval
        self._task: asyncio.Task | None = None

    def sample(self) -> None:
        TALLY.flush()
        state = self.state
        writer = getattr(state, "writer", None)
        if writer is not None:
            WRITER_QUEUE.set(writer.queue_depth)
            WRITER_CIRCUIT_OPEN.set(0 if writer.available else 1)
        for name, pool in (("read", getattr(state, "pool", None)), ("write", getattr(state, "write_pool", None))):
            if pool is None:
                continue
            s = pool.get_stats()
            size = s.get("pool_size", 0)
            POOL_SIZE.labels(name).set(size)
            POOL_IN_USE.labels(name).set(max(0, size - s.get("pool_available", 0)))
            POOL_WAITING.labels(name).set(s.get("requests_waiting", 0))

    def start(self) -> None:
        if _enabled:
            self._task = asyncio.create_task(self._run(), name="metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        TALLY.flush()  # what this worker counted last

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a gauge is not worth a worker
                log.exception("metrics sample failed")
            await asyncio.sleep(self.interval)


# -- exposition --------------------------------------------------------------------------------
def registry() -> CollectorRegistry:
    """What a scrape reports: every worker's files summed (multiprocess), or this process."""
    if not MULTIPROCESS:
        return REGISTRY
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return reg


def exposition() -> bytes:
    return generate_latest(registry())


router = APIRouter()


@router.get("/metrics", tags=["operations"], response_class=Response,
            dependencies=[Depends(require_admin)],
            summary="Prometheus metrics of every worker (text exposition format)",
            responses={200: {"description": "Prometheus text format",
                             "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
                       401: {"description": "No valid key or token (an `admin` key is needed)"},
                       403: {"description": "The key or token does not have the `admin` scope"}})
async def metrics_endpoint(request: Request) -> Response:
    sampler = getattr(request.app.state, "metrics_sampler", None)
    if sampler is not None:
        sampler.sample()  # this worker's gauges as of now; the others' are at most a second old
    body = await asyncio.to_thread(exposition)  # reads every worker's files: off the event loop
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# -- METRICS_PORT ------------------------------------------------------------------------------
class _TalliedFirst:
    """The registry the port's server (a thread) reads, after the event loop has written this
    worker's tally (only the loop's thread touches it). Waits at most half a second: a loop that
    busy answers with the counts as they were."""

    def __init__(self, reg, loop: asyncio.AbstractEventLoop) -> None:
        self.reg = reg
        self.loop = loop

    def _flush_on_loop(self) -> None:
        done = threading.Event()

        def flush() -> None:
            try:
                TALLY.flush()
            finally:
                done.set()

        try:
            self.loop.call_soon_threadsafe(flush)
            done.wait(0.5)
        except RuntimeError:  # the loop is closed: the worker is stopping
            pass

    def collect(self):
        self._flush_on_loop()
        return self.reg.collect()

    def restricted_registry(self, names):  # a scrape asking for some metrics (`name[]=`)
        self._flush_on_loop()
        return self.reg.restricted_registry(names)


def serve_port(host: str, port: int) -> bool:
    """Serve the same text without a key on host:port (loopback by default), from the first
    worker that can bind it: the others find the port taken and skip it; when that worker is
    replaced, its replacement binds it. A thread of this worker serves it (prometheus-client's
    own server). True when this worker serves it."""
    from prometheus_client import start_http_server
    try:
        start_http_server(port, addr=host, registry=_TalliedFirst(registry(), asyncio.get_running_loop()))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:  # EADDRINUSE: another worker serves it
            log.error("metrics port %s:%d cannot be served: %s", host, port, exc)
        return False
    log.info("metrics served on %s:%d", host, port)
    return True
