"""Gunicorn settings shared by `make run`, the Docker image and the benchmarks.

Read through python-decouple like the app's own settings (src/analytics/config.py): the
environment first, then a `.env` file found from this directory upward (the repository root's).
"""
import os

# Not named `config` here: gunicorn takes every module-level name that is one of its settings.
from decouple import config as setting

bind = f"{setting('HOST', default='127.0.0.1')}:{setting('PORT', default=8002, cast=int)}"
workers = setting("WEB_CONCURRENCY", default=2, cast=int)
# uvicorn's worker, without uvicorn's own X-Forwarded-For handling: TRUSTED_PROXIES decides
# (src/analytics/web/worker.py).
worker_class = "analytics.web.worker.Worker"
# Graceful shutdown: the event writer flushes what it accepted before the worker exits.
graceful_timeout = setting("GRACEFUL_TIMEOUT", default=30, cast=int)
timeout = setting("WORKER_TIMEOUT", default=60, cast=int)
keepalive = 5
accesslog = None  # the app writes its own structured access log
errorlog = "-"
loglevel = setting("LOG_LEVEL", default="info").lower()
chdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Gunicorn 27's control socket defaults to one path per user; several servers on one machine
# (tests, benchmarks) would fight over it, and we do not use it.
control_socket_disable = True

# Prometheus metrics of every worker, summed (prometheus-client's multiprocess mode; see
# src/analytics/web/metrics.py). The directory must be set before any worker imports the client,
# hence here, in the master, at configuration time: a fresh one per master, removed at exit,
# unless the operator set PROMETHEUS_MULTIPROC_DIR (then its old files are removed at start:
# values of a previous run must not be added to this one's).
import atexit
import glob
import shutil
import tempfile

# prometheus-client reads it from the environment: a value from .env is put there.
if setting("PROMETHEUS_MULTIPROC_DIR", default=""):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = setting("PROMETHEUS_MULTIPROC_DIR")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(_stale)
else:
    # In memory where there is a tmpfs for it: the workers write these files on every request.
    _metrics_dir = tempfile.mkdtemp(prefix="analytics-metrics-",
                                    dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    _master_pid = os.getpid()

    @atexit.register
    def _remove_metrics_dir() -> None:
        if os.getpid() == _master_pid:  # workers (forked) run atexit too; only the master owns it
            shutil.rmtree(_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """A dead worker's live gauges (queue depth, pool connections, breaker) leave the sums; its
    counters stay (they count what happened)."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
# Who the client is, is decided in one place: the app, by TRUSTED_PROXIES (web/client.py). Left
# at its default (127.0.0.1,::1), uvicorn would rewrite the peer address from X-Forwarded-For
# for any local caller before the app sees it, and that caller could pick any address (a fresh
# rate-limit budget per request, another visitor's hash).
forwarded_allow_ips = ""
