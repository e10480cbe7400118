"""Export: GET /api/v1/events/export streams the raw events of a range as NDJSON or CSV.

- statement.py: the COPY statement (columns, filters, order on (time, id)), formatted by
  PostgreSQL itself;
- stream.py: one export's producer (a task reading the COPY into 64 KiB chunks, gzip-compressed
  off the event loop when asked) and the response body that consumes it; a disconnect cancels
  the statement;
- router.py: the route (parameters shared with the stats API, the per-worker cap on concurrent
  exports, headers).
"""
