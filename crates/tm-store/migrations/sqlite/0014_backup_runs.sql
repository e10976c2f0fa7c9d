-- The record of backups: one row per run, whatever its outcome. `outcome` is
-- `verified` (written, then restored into a scratch store and found equal), `unverified`
-- (written, but its check failed) or `failed` (not written). Rows are kept: the counts
-- of failed runs are exported as counters, which must never go down.
CREATE TABLE backup_runs (
    id               TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    started_at       TEXT NOT NULL,
    finished_at      TEXT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('verified', 'unverified', 'failed')),
    location         TEXT NOT NULL,
    bytes            INTEGER NOT NULL CHECK (bytes >= 0),
    duration_ms      INTEGER NOT NULL CHECK (duration_ms >= 0),
    detail           TEXT NOT NULL
) STRICT;

CREATE INDEX backup_runs_finished ON backup_runs (outcome, finished_at);
