"""create_app(): the lifespan builds the pool, migrates the schema to head and runs the writer."""
from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from .aggregation import router as stats_router
from .aggregation import seed_api
from .aggregation.cache import AnswerCache
from .aggregation.guard import RawGate
from .aggregation.seed_reader import SeedReader
from .aggregation.service import StatsService
from .auth import errors as auth_errors
from .auth.jwt import JwtVerifier
from .auth.store import KeyStore
from .config import Settings, get_settings
from .ingestion import geo
from .db import make_pools
from .replicas import ReadRouter
from .export import router as export_router
from .ingestion import router as ingestion_router
from .ingestion.enrich import UserAgentCache, classify
from .ingestion.pipeline import Enricher
from .ingestion.writer import EventWriter
from .privacy.salts import SaltKeeper
from .retention import check_settings as check_retention
from .retention.worker import RetentionTask
from .rollups import install as install_rollups
from .schema import bootstrap_with_retry
from .web import errors, health, metrics, ratelimit
from .web import dashboard
from .web import tracker as tracker_js
from .web.client import parse_networks
from .web.cors import SplitCors
from .web.fastpath import FastPaths
from .web.logging import configure_logging
from .web.looplag import LoopLagMonitor
from .web.middleware import BodySizeLimitMiddleware, HeadAsGet, RequestContextMiddleware, SchemaReadyMiddleware

log = logging.getLogger("analytics")

_WARM_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36")

# Paths that work without the database.
_NO_DB_PATHS = {"/", "/healthz", "/readyz", "/docs", "/openapi.json", "/redoc", "/metrics",
                "/js/tracker.js", *dashboard.NO_DB_PATHS}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    trusted_networks = parse_networks(settings.trusted_proxies)  # a bad entry fails the start, named
    check_retention(settings)  # ROLLUP_RETENTION_DAYS < RETENTION_DAYS: refuse to start
    install_rollups()  # every stored event is folded into the rollups in the same statement
    metrics.configure(settings.metrics_enabled)
    geo.load(settings.geoip_db)  # the country database, once per worker (GEOIP_DB or packaged)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.settings = settings
        state.trusted_networks = trusted_networks
        state.schema_ready = asyncio.Event()
        state.db_info = None
        # The writer's connections are its own: reads use state.pool and cannot take them.
        state.write_pool, state.pool = make_pools(settings)
        await state.write_pool.open(wait=False)
        await state.pool.open(wait=False)
        state.enricher = Enricher(UserAgentCache(settings.ua_cache_size),
                                  max_age=timedelta(days=settings.max_event_age_days),
                                  max_skew=timedelta(seconds=settings.max_clock_skew_s))
        state.writer = EventWriter(state.write_pool, batch_max=settings.write_batch_max,
                                   wait_ms=settings.write_batch_wait_ms,
                                   queue_max=settings.write_queue_max,
                                   timeout_s=settings.write_timeout_s,
                                   retries=settings.write_retries,
                                   max_inflight=settings.write_max_inflight)
        raw_gate = RawGate(settings.read_raw_concurrency, settings.read_raw_wait_s,
                           settings.read_raw_min_seconds)
        # Stats, seed and export reads: a usable replica of DATABASE_READ_URLS, else the primary.
        state.reads = ReadRouter.from_settings(settings, state.pool)
        await state.reads.open()
        state.stats = StatsService(state.pool, AnswerCache(settings.stats_cache_ttl_s,
                                                           settings.stats_cache_max_bytes), raw_gate,
                                   reads=state.reads)
        # The daily salt of the visitor hash, cached per worker (privacy/salts.py).
        state.salts = SaltKeeper(state.pool, settings.visitor_salt_refresh_s)
        state.seed_reader = SeedReader(state.pool, state.stats.ready, raw_gate=raw_gate,
                                       max_rows=settings.seed_max_rows, reads=state.reads)

        # Build the user-agent resolver (~1 s) off the event loop, at startup rather than on the
        # event loop of the first request that carries a user agent; ready waits for it.
        warm_ua = asyncio.create_task(asyncio.to_thread(classify, _WARM_UA), name="ua-warm")

        # API keys: an in-memory table per worker, read before the worker says it is ready and
        # refreshed every KEYS_REFRESH_SECONDS (auth/store.py); JWTs when JWT_JWKS_URL is set.
        state.keys = KeyStore(settings)
        state.jwt = (JwtVerifier(settings.jwt_jwks_url, issuer=settings.jwt_issuer,
                                 audience=settings.jwt_audience, scope_claim=settings.jwt_scope_claim)
                     if settings.jwt_jwks_url else None)

        async def bootstrap():
            state.db_info = await bootstrap_with_retry(settings)
            state.salts.start()  # loads today's salt now, then keeps it fresh
            await warm_ua
            try:
                async with asyncio.timeout(10):
                    await state.keys.refresh()
            except Exception:  # noqa: BLE001 - logged by the store; its task tries again
                pass
            state.keys.start()
            state.schema_ready.set()

        boot_task = asyncio.create_task(bootstrap(), name="schema-bootstrap")
        state.writer.start()
        state.loop_lag = LoopLagMonitor()
        state.loop_lag.start()
        state.metrics_sampler = metrics.Sampler(state)
        state.metrics_sampler.start()
        if settings.metrics_port:
            metrics.serve_port(settings.metrics_host, settings.metrics_port)
        # Retention (when configured): one run per interval per database, whichever worker gets it.
        state.retention = RetentionTask(settings)
        state.retention.start(state.schema_ready)
        # Everything built so far (the app, its schemas, the libraries) lives as long as the
        # process: keep it out of the cyclic collector's full passes, whose pauses showed in
        # the single-event p99.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            boot_task.cancel()
            warm_ua.cancel()
            await state.loop_lag.stop()
            await state.metrics_sampler.stop()
            await state.keys.stop()
            await state.salts.stop()
            await state.retention.stop()
            await state.writer.stop()
            await state.reads.close()
            await state.pool.close()
            await state.write_pool.close()
            log.info("shutdown complete", extra={"writer_events": state.writer.stats.events})

    app = FastAPI(title="Event analytics API", version="1.0.0", lifespan=lifespan,
                  description="Self-hostable time-series event analytics on TimescaleDB.")

    # Innermost: the routes marked @fast (the single-event POST, the dashboard reads), answered
    # from their own declarations past FastAPI's routing layers.
    app.add_middleware(FastPaths, enabled=settings.fast_paths)
    # Until the schema exists, anything that needs the database gets a clean 503.
    app.add_middleware(SchemaReadyMiddleware, no_db_paths=_NO_DB_PATHS)
    errors.install(app)
    ratelimit.install(app, settings)  # RATE_LIMIT_*: the limiter and its 429
    if metrics.count_rate_limited not in ratelimit.on_refused:  # one hook, however many apps
        ratelimit.on_refused.append(metrics.count_rate_limited)
    auth_errors.install(app)  # 401/403 answers, and the security schemes in the OpenAPI schema
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(tracker_js.router)  # GET /js/tracker.js
    app.include_router(dashboard.router)  # GET /dashboard and its assets
    ingestion_router.document_batch_limit(settings.batch_max_events)
    app.include_router(ingestion_router.router, prefix="/api/events", tags=["events"])
    app.include_router(seed_api.router, prefix="/api/events", tags=["events"])
    app.include_router(stats_router.router, prefix="/api/v1/stats", tags=["stats"])
    app.include_router(export_router.router, prefix="/api/v1/events", tags=["export"])
    # The single event (the tracker's POST) has its own, small body limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, path_limits={
        "/api/events/": (settings.max_event_bytes, "MAX_EVENT_BYTES")})
    # CORS outside the body limit, so that a browser tracker can read a 413 too. Ingest routes
    # answer any origin, the others CORS_ORIGINS only (web/cors.py).
    app.add_middleware(SplitCors, read_origins=settings.cors_origins)
    app.add_middleware(HeadAsGet, skip=("/api/v1/events/export",))
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log,
                       observe=metrics.RequestMetrics().observe if settings.metrics_enabled else None)
    return app
