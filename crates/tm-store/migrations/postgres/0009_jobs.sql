-- The job queue: background work (webhook deliveries, the outbox relay, purges) that
-- any instance may run, at least once, in priority order. A worker claims a job by
-- leasing it until `locked_until` (FOR UPDATE SKIP LOCKED: two workers never claim the
-- same job); a lease that runs out (its worker died) makes the job claimable again.
-- A job that fails is retried with backoff until `max_attempts`, then kept as dead
-- (the dead-letter queue) until replayed or purged. A `dedup_key` names at most one
-- live (queued or running) job.
CREATE TABLE jobs (
    id           uuid        NOT NULL PRIMARY KEY,
    queue        text        NOT NULL CHECK (queue IN ('high', 'default', 'bulk')),
    priority     smallint    NOT NULL CHECK (priority BETWEEN 0 AND 2),
    kind         text        NOT NULL CHECK (char_length(kind) BETWEEN 1 AND 64),
    payload      jsonb       NOT NULL,
    dedup_key    text        CHECK (char_length(dedup_key) BETWEEN 1 AND 255),
    tenant       text        CHECK (tenant COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    state        text        NOT NULL CHECK (state IN ('queued', 'running', 'dead')),
    attempts     integer     NOT NULL CHECK (attempts >= 0),
    max_attempts integer     NOT NULL CHECK (max_attempts >= 1),
    run_at       timestamptz NOT NULL,
    locked_until timestamptz,
    locked_by    text,
    last_error   text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CHECK ((state = 'running') = (locked_until IS NOT NULL AND locked_by IS NOT NULL))
);

CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key) WHERE dedup_key IS NOT NULL AND state <> 'dead';
CREATE INDEX jobs_ready ON jobs (priority, run_at) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_dead ON jobs (tenant, id) WHERE state = 'dead';
