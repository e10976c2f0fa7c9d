#!/bin/bash
# The read replica. On its first start (an empty data directory) it copies the primary
# with pg_basebackup, streaming the WAL written meanwhile, through the slot the primary's
# init script made; --write-recovery-conf leaves standby.signal and primary_conninfo, so
# PostgreSQL then starts as a hot standby that follows the primary.
set -euo pipefail

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "copying the primary into $PGDATA"
    # On failure pg_basebackup empties the directory again; the restart policy retries.
    pg_basebackup --host=postgres --port=5432 --username=replicator --no-password \
        --pgdata="$PGDATA" --wal-method=stream --slot=replica1 --write-recovery-conf \
        --checkpoint=fast
fi
# PostgreSQL refuses a data directory that others may read; the image's is mode 1777.
chmod 0700 "$PGDATA"
# Queries on the replica hold back the primary's vacuum rather than being cancelled.
exec postgres -c hot_standby_feedback=on
