"""The only module that reads settings. Every setting has a safe default and a README line."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from decouple import Csv, config


class Secret(str):
    """A string that never shows its value in repr or logs."""

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return "Secret('**********')"


def normalize_database_url(url: str) -> str:
    """Accept any URL form hosts hand out and return a libpq conninfo URL for psycopg."""
    url = url.strip()
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://",
                   "timescaledb+psycopg://", "timescaledb://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def _database_url() -> str:
    url = config("DATABASE_URL", default="").strip()
    if url:
        return normalize_database_url(url)
    host = config("POSTGRES_HOST", default="").strip()
    if host:
        if host.startswith("/"):
            host = quote(host, safe="")  # a Unix-socket directory, percent-encoded for libpq
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        user = quote(config("POSTGRES_USER", default="postgres"), safe="")
        password = config("POSTGRES_PASSWORD", default="")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        port = config("POSTGRES_PORT", default=5432, cast=int)
        db = quote(config("POSTGRES_DB", default="postgres"), safe="")
        return f"postgresql://{auth}@{host}:{port}/{db}"
    # The project-local cluster that boot/timescaledb.sh runs.
    port = config("LOCAL_DB_PORT", default=54329, cast=int)
    return f"postgresql://postgres@127.0.0.1:{port}/analytics"


def _geoip_db() -> str:
    path = config("GEOIP_DB", default="").strip()
    if path:
        from .ingestion.geo import open_mmdb
        open_mmdb(path)  # GeoDatabaseError naming GEOIP_DB when missing or unreadable
    return path


@dataclass(frozen=True)
class Settings:
    database_url: Secret = field(default_factory=lambda: Secret(_database_url()))
    db_schema: str = field(default_factory=lambda: config("DB_SCHEMA", default="public"))
    db_pool_size: int = field(default_factory=lambda: config("DB_POOL_SIZE", default=10, cast=int))
    db_timeout: float = field(default_factory=lambda: config("DB_TIMEOUT", default=5.0, cast=float))
    db_statement_timeout_ms: int = field(
        default_factory=lambda: config("DB_STATEMENT_TIMEOUT_MS", default=30000, cast=int))
    events_chunk_interval: str = field(
        default_factory=lambda: config("EVENTS_CHUNK_INTERVAL", default="7 days"))
    # Origins whose pages may call the read routes from a browser (none by default; ingest
    # routes answer any origin: trackers run on every page).
    cors_origins: tuple[str, ...] = field(
        default_factory=lambda: tuple(config("CORS_ORIGINS", default="", cast=Csv())))
    max_event_age_days: float = field(
        default_factory=lambda: config("MAX_EVENT_AGE_DAYS", default=7.0, cast=float))
    # Visits (issue 11): a visitor's run of events with no gap longer than this (rollups/visits.py)
    visit_timeout_minutes: float = field(
        default_factory=lambda: config("VISIT_TIMEOUT_MINUTES", default=30.0, cast=float))
    max_clock_skew_s: float = field(
        default_factory=lambda: config("MAX_CLOCK_SKEW_SECONDS", default=60.0, cast=float))
    ua_cache_size: int = field(default_factory=lambda: config("UA_CACHE_SIZE", default=10000, cast=int))
    # Countries (ingestion/geo.py): a MaxMind or DB-IP .mmdb file instead of the packaged
    # database; opened here, so that a bad path stops the start, named, rather than any event.
    geoip_db: str = field(default_factory=lambda: _geoip_db())
    log_level: str = field(default_factory=lambda: config("LOG_LEVEL", default="INFO").upper())
    log_format: str = field(default_factory=lambda: config("LOG_FORMAT", default="json").lower())
    # Group commit (write path)
    write_batch_max: int = field(default_factory=lambda: config("WRITE_BATCH_MAX", default=500, cast=int))
    write_batch_wait_ms: float = field(
        default_factory=lambda: config("WRITE_BATCH_WAIT_MS", default=2.0, cast=float))
    write_queue_max: int = field(default_factory=lambda: config("WRITE_QUEUE_MAX", default=10000, cast=int))
    write_timeout_s: float = field(
        default_factory=lambda: config("WRITE_TIMEOUT_SECONDS", default=10.0, cast=float))
    write_retries: int = field(default_factory=lambda: config("WRITE_RETRIES", default=3, cast=int))
    write_max_inflight: int = field(
        default_factory=lambda: config("WRITE_MAX_INFLIGHT", default=2, cast=int))
    # A batch of BATCH_MAX_EVENTS events of up to 4 KB each (a full desktop user agent is under
    # 300 bytes); the parsed items of a body take several times its size in memory.
    max_body_bytes: int = field(default_factory=lambda: config("MAX_BODY_BYTES", default=4 * 1024 * 1024, cast=int))
    max_event_bytes: int = field(default_factory=lambda: config("MAX_EVENT_BYTES", default=64 * 1024, cast=int))
    # What a request may take before the app sees it (web/http.py): the request line and headers
    # in bytes and in time, and the body in time. uvicorn's parser has no limit of its own.
    http_max_head_bytes: int = field(
        default_factory=lambda: config("HTTP_MAX_HEAD_BYTES", default=64 * 1024, cast=int))
    http_head_timeout_seconds: float = field(
        default_factory=lambda: config("HTTP_HEAD_TIMEOUT_SECONDS", default=10.0, cast=float))
    http_body_timeout_seconds: float = field(
        default_factory=lambda: config("HTTP_BODY_TIMEOUT_SECONDS", default=60.0, cast=float))
    # Serve the routes marked @fast past FastAPI's routing layers (web/fastpath.py).
    fast_paths: bool = field(default_factory=lambda: config("FAST_PATHS", default=True, cast=bool))
    access_log: bool = field(default_factory=lambda: config("ACCESS_LOG", default=True, cast=bool))
    batch_max_events: int = field(default_factory=lambda: config("BATCH_MAX_EVENTS", default=1000, cast=int))
    # Query API (read path)
    stats_max_buckets: int = field(
        default_factory=lambda: config("STATS_MAX_BUCKETS", default=10000, cast=int))
    stats_cache_ttl_s: float = field(
        default_factory=lambda: config("STATS_CACHE_TTL_SECONDS", default=2.0, cast=float))
    stats_cache_max_bytes: int = field(
        default_factory=lambda: config("STATS_CACHE_MAX_BYTES", default=32 * 1024 * 1024, cast=int))
    stats_allow_raw_source: bool = field(
        default_factory=lambda: config("STATS_ALLOW_RAW_SOURCE", default=False, cast=bool))
    seed_max_rows: int = field(default_factory=lambda: config("SEED_MAX_ROWS", default=100_000, cast=int))
    # Reads cannot starve writes: their own pool, statement timeout and cap on raw scans.
    db_read_pool_size: int = field(
        default_factory=lambda: config("DB_READ_POOL_SIZE", default=config("DB_POOL_SIZE", default=10, cast=int),
                                       cast=int))
    db_write_pool_size: int = field(
        default_factory=lambda: config("DB_WRITE_POOL_SIZE", default=3, cast=int))
    read_statement_timeout_ms: int = field(
        default_factory=lambda: config("READ_STATEMENT_TIMEOUT_MS", default=10000, cast=int))
    read_raw_concurrency: int = field(
        default_factory=lambda: config("READ_RAW_CONCURRENCY", default=2, cast=int))
    read_raw_min_seconds: float = field(
        default_factory=lambda: config("READ_RAW_MIN_SECONDS", default=3600.0, cast=float))
    read_raw_wait_s: float = field(
        default_factory=lambda: config("READ_RAW_WAIT_SECONDS", default=1.0, cast=float))
    # Read replicas (replicas.py): stats reads go to these streaming replicas when usable.
    database_read_urls: tuple[Secret, ...] = field(default_factory=lambda: tuple(
        Secret(normalize_database_url(u)) for u in config("DATABASE_READ_URLS", default="", cast=Csv()) if u))
    read_max_lag_s: float = field(
        default_factory=lambda: config("READ_MAX_LAG_SECONDS", default=10.0, cast=float))
    read_health_interval_s: float = field(
        default_factory=lambda: config("READ_HEALTH_INTERVAL_SECONDS", default=2.0, cast=float))
    # Exports (GET /api/v1/events/export): at most this many at once per worker (each holds a read
    # connection and a database core), each at most this long (its own statement timeout).
    export_concurrency: int = field(default_factory=lambda: config("EXPORT_CONCURRENCY", default=2, cast=int))
    export_max_seconds: float = field(
        default_factory=lambda: config("EXPORT_MAX_SECONDS", default=3600.0, cast=float))
    # Who the client is (web/client.py): proxies whose X-Forwarded-For / Forwarded we believe.
    trusted_proxies: tuple[str, ...] = field(
        default_factory=lambda: tuple(config("TRUSTED_PROXIES", default="", cast=Csv())))
    # Prometheus metrics (web/metrics.py): GET /metrics behind `admin`; METRICS_PORT (0: off) also
    # serves them without a key on METRICS_HOST, which should stay a loopback address.
    metrics_enabled: bool = field(default_factory=lambda: config("METRICS_ENABLED", default=True, cast=bool))
    metrics_port: int = field(default_factory=lambda: config("METRICS_PORT", default=0, cast=int))
    metrics_host: str = field(default_factory=lambda: config("METRICS_HOST", default="127.0.0.1"))
    # Rate limits (web/ratelimit.py): `limits` notation, ';' between windows, 'off' for none.
    # Ingest per client address (or ingest key): a whole batch (BATCH_MAX_EVENTS) fits the short
    # window. Reads per key (or address, without one).
    rate_limit_enabled: bool = field(
        default_factory=lambda: config("RATE_LIMIT_ENABLED", default=True, cast=bool))
    rate_limit_ingest: str = field(
        default_factory=lambda: config("RATE_LIMIT_INGEST", default="1000/10 seconds;20000/hour"))
    rate_limit_read: str = field(
        default_factory=lambda: config("RATE_LIMIT_READ", default="20/second;600/minute"))
    rate_limit_storage_url: Secret = field(
        default_factory=lambda: Secret(config("RATE_LIMIT_STORAGE_URL", default="memory://")))
    # Access (auth/): API keys, JWTs from an identity provider, and who may read or ingest.
    public_reads: bool = field(default_factory=lambda: config("PUBLIC_READS", default=False, cast=bool))
    ingest_key_required: bool = field(
        default_factory=lambda: config("INGEST_KEY_REQUIRED", default=False, cast=bool))
    ingest_allowed_hosts: tuple[str, ...] = field(
        default_factory=lambda: tuple(h.lower() for h in config("INGEST_ALLOWED_HOSTS", default="", cast=Csv())))
    keys_refresh_s: float = field(
        default_factory=lambda: config("KEYS_REFRESH_SECONDS", default=5.0, cast=float))
    jwt_jwks_url: str = field(default_factory=lambda: config("JWT_JWKS_URL", default="").strip())
    jwt_issuer: str = field(default_factory=lambda: config("JWT_ISSUER", default="").strip())
    jwt_audience: str = field(default_factory=lambda: config("JWT_AUDIENCE", default="").strip())
    jwt_scope_claim: str = field(default_factory=lambda: config("JWT_SCOPE_CLAIM", default="scope").strip())
    # Privacy (analytics/privacy): no raw IP is stored unless asked for; visitors are counted by
    # a daily-salted hash. The salt of the day is re-read from the database this often (and at
    # each UTC day change), never per request.
    store_ip: bool = field(default_factory=lambda: config("STORE_IP", default=False, cast=bool))
    visitor_salt_refresh_s: float = field(
        default_factory=lambda: config("VISITOR_SALT_REFRESH_SECONDS", default=3600.0, cast=float))
    # Retention (analytics.retention): days of raw events and of rollups to keep; 0 keeps them forever.
    retention_days: float = field(default_factory=lambda: config("RETENTION_DAYS", default=0.0, cast=float))
    rollup_retention_days: float = field(
        default_factory=lambda: config("ROLLUP_RETENTION_DAYS", default=0.0, cast=float))
    retention_interval_s: float = field(
        default_factory=lambda: config("RETENTION_INTERVAL_SECONDS", default=86400.0, cast=float))


def get_settings() -> Settings:
    return Settings()
