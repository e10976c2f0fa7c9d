-- Every service (tenant, service, env) ever written has a row here. Each write to one of
-- its routes locks the row first and moves its generation on when it changes anything,
-- so the writes of one service commit one at a time, in generation order: the
-- generation names a state of the service everywhere in the fleet (watch and explain
-- show it), and the audit rows of one service are in commit order by id.
CREATE TABLE services (
    tenant     text   NOT NULL CHECK (tenant  COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    service    text   NOT NULL CHECK (service COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    env        text   NOT NULL CHECK (env     COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    generation bigint NOT NULL CHECK (generation >= 0),
    PRIMARY KEY (tenant, service, env)
);

-- The audit log names its service in columns of its own (a deleted route's too), the
-- request that made each change, the service's generation after it, and, for a change
-- of which versions are active, the active versions after it: the activation history
-- that a rollback walks back. A rollback's rows name the entry whose state they restored.
ALTER TABLE audit_log
    ADD COLUMN tenant      text,
    ADD COLUMN service     text,
    ADD COLUMN env         text,
    ADD COLUMN request_id  text,
    ADD COLUMN generation  bigint,
    ADD COLUMN active_after jsonb,
    ADD COLUMN rollback_to bigint;

UPDATE audit_log SET tenant  = COALESCE(after, before)->>'tenant',
                     service = COALESCE(after, before)->>'service',
                     env     = COALESCE(after, before)->>'env';

ALTER TABLE audit_log
    ALTER COLUMN tenant SET NOT NULL,
    ALTER COLUMN service SET NOT NULL,
    ALTER COLUMN env SET NOT NULL,
    DROP CONSTRAINT audit_log_action_check,
    ADD CONSTRAINT audit_log_action_check
        CHECK (action IN ('create', 'activate', 'deactivate', 'update', 'delete', 'rollback')),
    ADD CONSTRAINT audit_log_request_id_check CHECK (char_length(request_id) <= 128);

INSERT INTO services (tenant, service, env, generation)
    SELECT tenant, service, env, count(*) FROM audit_log GROUP BY tenant, service, env;

CREATE INDEX audit_log_service_feed ON audit_log (tenant, service, env, txid, id);
CREATE INDEX audit_log_tenant_feed ON audit_log (tenant, txid, id);
