#!/bin/sh
# docker-compose.yml mounts this into the primary's /docker-entrypoint-initdb.d/: it runs once,
# when the database volume is new, and lets the `scale` profile's replica stream WAL from it
# (replication connections match no "all" database line of pg_hba.conf).
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
