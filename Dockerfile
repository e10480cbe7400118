# Production image: gunicorn + uvicorn workers serving src/main.py:app on $PORT.
FROM python:3.12-slim

ENV PORT=8002 HOST=0.0.0.0 WEB_CONCURRENCY=2 PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app/src

WORKDIR /app

# Dependencies first so code changes do not invalidate this layer.
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt

# boot/gunicorn.conf.py chdirs to <its dir>/../src, so the layout must be /app/boot + /app/src.
COPY src/ /app/src/
COPY boot/ /app/boot/

RUN chmod 0755 /app/boot/docker-run.sh \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app

# Non-root from here on, with a home of its own (gunicorn's control socket, which would live
# there, is disabled in boot/gunicorn.conf.py).
ENV HOME=/home/app
USER 10001:10001

EXPOSE 8002

CMD ["/app/boot/docker-run.sh"]
