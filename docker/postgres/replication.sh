#!/bin/sh
# Runs once, when the db volume is initialised (docker-entrypoint-initdb.d): lets db-replica
# connect for streaming replication as the shop's user, with its password. An older volume
# needs this line added by hand, then `SELECT pg_reload_conf()` (docs/operations.md).
set -e
echo "host replication ${POSTGRES_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
