-- Every service (tenant, service, env) ever written has a row here. Each write to one of
-- its routes moves its generation on when it changes anything: the generation names a
-- state of the service (watch and explain show it).
CREATE TABLE services (
    tenant     TEXT    NOT NULL,
    service    TEXT    NOT NULL,
    env        TEXT    NOT NULL,
    generation INTEGER NOT NULL CHECK (generation >= 0),
    PRIMARY KEY (tenant, service, env)
) STRICT, WITHOUT ROWID;

-- The audit log names its service in columns of its own (a deleted route's too), the
-- request that made each change, the service's generation after it, and, for a change
-- of which versions are active, the active versions after it: the activation history
-- that a rollback walks back. A rollback's rows name the entry whose state they restored.
-- SQLite cannot change a CHECK in place: the table is made again.
CREATE TABLE audit_log_next (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL CHECK (action IN ('create', 'activate', 'deactivate',
                                                    'update', 'delete', 'rollback')),
    route_id     TEXT    NOT NULL,
    before       TEXT,
    after        TEXT,
    tenant       TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    env          TEXT    NOT NULL,
    request_id   TEXT    CHECK (length(request_id) <= 128),
    generation   INTEGER,
    active_after TEXT,
    rollback_to  INTEGER
) STRICT;

INSERT INTO audit_log_next (id, at, actor, action, route_id, before, after, tenant, service, env)
    SELECT id, at, actor, action, route_id, before, after,
           json_extract(COALESCE(after, before), '$.tenant'),
           json_extract(COALESCE(after, before), '$.service'),
           json_extract(COALESCE(after, before), '$.env')
    FROM audit_log;

DROP TABLE audit_log;
ALTER TABLE audit_log_next RENAME TO audit_log;

CREATE INDEX audit_log_route ON audit_log (route_id, id);
CREATE INDEX audit_log_service ON audit_log (tenant, service, env, id);
CREATE INDEX audit_log_tenant ON audit_log (tenant, id);

INSERT INTO services (tenant, service, env, generation)
    SELECT tenant, service, env, count(*) FROM audit_log GROUP BY tenant, service, env;
