"""The gunicorn worker class: uvicorn's, without its own X-Forwarded-For handling.

Uvicorn rewrites the ASGI scope's client from X-Forwarded-For when the peer is in
FORWARDED_ALLOW_IPS (gunicorn's `forwarded_allow_ips`, 127.0.0.1 by default): behind gunicorn on
loopback, or with that variable set wide, any client could choose the address the service sees.
Who the client is has one rule here, TRUSTED_PROXIES (web/client.py), so uvicorn's is off.

Its HTTP protocol is uvicorn's httptools one with limits on the request head's size and on the
time a head and a body may take (web/http.py).
"""
from __future__ import annotations

from uvicorn.workers import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "proxy_headers": False,
                     "http": "analytics.web.http:GuardedHttpToolsProtocol"}
