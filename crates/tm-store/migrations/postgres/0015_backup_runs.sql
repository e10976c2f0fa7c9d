-- The record of backups: one row per run, whatever its outcome. `outcome` is
-- `verified` (written, then restored into a scratch store and found equal), `unverified`
-- (written, but its check failed) or `failed` (not written). Rows are kept: the counts
-- of failed runs are exported as counters, which must never go down.
CREATE TABLE backup_runs (
    id               uuid             NOT NULL PRIMARY KEY,
    started_at       timestamptz      NOT NULL,
    finished_at      timestamptz      NOT NULL,
    outcome          text             NOT NULL CHECK (outcome IN ('verified', 'unverified', 'failed')),
    location         text             NOT NULL,
    bytes            bigint           NOT NULL CHECK (bytes >= 0),
    duration_ms      bigint           NOT NULL CHECK (duration_ms >= 0),
    detail           text             NOT NULL
);

CREATE INDEX backup_runs_finished ON backup_runs (outcome, finished_at);
