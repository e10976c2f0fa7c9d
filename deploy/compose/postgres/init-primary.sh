#!/bin/sh
# The primary's first start: the image's entrypoint runs this once, when it initialises
# an empty data directory. It creates the service's role and database, the role and
# the replication slot the read replica streams with, and lets that role connect for
# replication (the image's own pg_hba.conf line covers ordinary connections only).
set -e
: "${DB_PASSWORD:?}" "${REPLICATION_PASSWORD:?}"

psql --no-psqlrc --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set tm_password="$DB_PASSWORD" \
    --set replication_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE tm LOGIN PASSWORD :'tm_password';
CREATE DATABASE tm OWNER tm;
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'replication_password';
-- The slot keeps the WAL the replica has not received yet (at most
-- max_slot_wal_keep_size, so that a replica gone for good cannot fill the disk).
SELECT pg_create_physical_replication_slot('replica1');
SQL

echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
