#!/bin/sh
# PgBouncer's one credential, the service's role, written where pgbouncer.ini expects it.
# With the password in plain text PgBouncer checks the client's SCRAM exchange and logs
# in to PostgreSQL with SCRAM in turn.
set -eu
: "${DB_PASSWORD:?}"
umask 077
printf '"tm" "%s"\n' "$DB_PASSWORD" >/tmp/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
