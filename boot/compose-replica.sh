#!/bin/sh
# The read replica of docker-compose.yml's `scale` profile: a streaming copy of timescale_pg_db
# (pg_basebackup -R on the first start, into an empty volume), then a hot standby that the API
# reads from (DATABASE_READ_URLS). Runs as the postgres user of the timescale image.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PRIMARY_HOST="${REPLICA_PRIMARY_HOST:-timescale_pg_db}"
export PGPASSWORD="$POSTGRES_PASSWORD"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h "$PRIMARY_HOST" -U "$POSTGRES_USER" -D "$PGDATA" -R -X stream -c fast; do
    echo "replica: waiting for the primary at $PRIMARY_HOST"
    rm -rf "${PGDATA:?}"/* 2>/dev/null || true
    sleep 2
  done
  chmod 700 "$PGDATA"
fi
# hot_standby_feedback: long reads (exports) are not cancelled by the primary's vacuum.
exec postgres -D "$PGDATA" -c listen_addresses='*' -c hot_standby=on -c hot_standby_feedback=on \
  -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off
