-- A service's routing policy: its resolve policy, failover chain and health checks, as
-- JSON (see the domain's ServicePolicy); none for the default policy.
ALTER TABLE services ADD COLUMN policy TEXT;

-- The health of each route whose health is checked, as its probes last found it:
-- `online` (passing, or failing no more than the checks tolerate), `degraded` (failing
-- beyond that), `stopped` (not checked: the route is inactive). A state change is also
-- written to the audit log (action `health`).
CREATE TABLE route_health (
    route_id       TEXT    NOT NULL PRIMARY KEY REFERENCES routes (id) ON DELETE CASCADE,
    state          TEXT    NOT NULL CHECK (state IN ('online', 'degraded', 'stopped')),
    failures       INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_error     TEXT    CHECK (length(last_error) <= 500),
    checked_at     TEXT,
    last_online_at TEXT,
    changed_at     TEXT    NOT NULL
) STRICT;

-- The audit log also records changes of a service's policy (no route: `route_id` null)
-- and of a route's health. SQLite cannot change a CHECK in place: the table is made again.
CREATE TABLE audit_log_next (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL CHECK (action IN ('create', 'activate', 'deactivate', 'update',
                                                    'delete', 'rollback', 'policy', 'health')),
    route_id     TEXT,
    before       TEXT,
    after        TEXT,
    tenant       TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    env          TEXT    NOT NULL,
    request_id   TEXT    CHECK (length(request_id) <= 128),
    generation   INTEGER,
    active_after TEXT,
    rollback_to  INTEGER,
    CHECK ((route_id IS NULL) = (action = 'policy'))
) STRICT;

INSERT INTO audit_log_next SELECT * FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_next RENAME TO audit_log;

CREATE INDEX audit_log_route ON audit_log (route_id, id);
CREATE INDEX audit_log_service ON audit_log (tenant, service, env, id);
CREATE INDEX audit_log_tenant ON audit_log (tenant, id);
