#!/bin/sh
# Container entry point (Dockerfile CMD). HOST, PORT and WEB_CONCURRENCY are read by
# gunicorn.conf.py, which also chdirs to /app/src so that `main:app` resolves.
set -e
cd /app
exec gunicorn -c /app/boot/gunicorn.conf.py main:app
