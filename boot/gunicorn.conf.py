"""Gunicorn settings shared by `make run`, the Docker image and the benchmarks."""
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8002')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# uvicorn's worker, without uvicorn's own X-Forwarded-For handling: TRUSTED_PROXIES decides
# (src/analytics/web/worker.py).
worker_class = "analytics.web.worker.Worker"
# Graceful shutdown: the event writer flushes what it accepted before the worker exits.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("WORKER_TIMEOUT", "60"))
keepalive = 5
accesslog = None  # the app writes its own structured access log
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
chdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Gunicorn 27's control socket defaults to one path per user; several servers on one machine
# (tests, benchmarks) would fight over it, and we do not use it.
control_socket_disable = True
