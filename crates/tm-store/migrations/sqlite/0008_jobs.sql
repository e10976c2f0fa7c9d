-- The job queue: background work (webhook deliveries, the outbox relay, purges), run
-- at least once, in priority order. A worker claims a job by leasing it until
-- `locked_until` (writes are serialized, so a claim is atomic); a lease that runs out
-- (its worker died) makes the job claimable again. A job that fails is retried with
-- backoff until `max_attempts`, then kept as dead (the dead-letter queue) until
-- replayed or purged. A `dedup_key` names at most one live (queued or running) job.
CREATE TABLE jobs (
    id           TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    queue        TEXT    NOT NULL CHECK (queue IN ('high', 'default', 'bulk')),
    priority     INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 2),
    kind         TEXT    NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    payload      TEXT    NOT NULL,
    dedup_key    TEXT    CHECK (length(dedup_key) BETWEEN 1 AND 255),
    tenant       TEXT    CHECK (tenant IS NULL
                                OR (length(tenant) BETWEEN 1 AND 63
                                    AND tenant NOT GLOB '*[^a-z0-9._-]*'
                                    AND substr(tenant, 1, 1) GLOB '[a-z0-9]')),
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'dead')),
    attempts     INTEGER NOT NULL CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_at       TEXT    NOT NULL,
    locked_until TEXT,
    locked_by    TEXT,
    last_error   TEXT,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    CHECK ((state = 'running') = (locked_until IS NOT NULL AND locked_by IS NOT NULL))
) STRICT;

CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key) WHERE dedup_key IS NOT NULL AND state <> 'dead';
CREATE INDEX jobs_ready ON jobs (priority, run_at) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_dead ON jobs (tenant, id) WHERE state = 'dead';
