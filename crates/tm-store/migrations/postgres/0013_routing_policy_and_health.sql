-- A service's routing policy: its resolve policy, failover chain and health checks, as
-- JSON (see the domain's ServicePolicy); none for the default policy.
ALTER TABLE services ADD COLUMN policy jsonb;

-- The health of each route whose health is checked, as its probes last found it:
-- `online` (passing, or failing no more than the checks tolerate), `degraded` (failing
-- beyond that), `stopped` (not checked: the route is inactive). A state change is also
-- written to the audit log (action `health`), which carries it to every instance.
CREATE TABLE route_health (
    route_id       uuid        NOT NULL PRIMARY KEY REFERENCES routes (id) ON DELETE CASCADE,
    state          text        NOT NULL CHECK (state IN ('online', 'degraded', 'stopped')),
    failures       integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_error     text        CHECK (char_length(last_error) <= 500),
    checked_at     timestamptz,
    last_online_at timestamptz,
    changed_at     timestamptz NOT NULL
);

-- The audit log also records changes of a service's policy (no route: `route_id` null)
-- and of a route's health.
ALTER TABLE audit_log
    ALTER COLUMN route_id DROP NOT NULL,
    DROP CONSTRAINT audit_log_action_check,
    ADD CONSTRAINT audit_log_action_check
        CHECK (action IN ('create', 'activate', 'deactivate', 'update', 'delete', 'rollback',
                          'policy', 'health')),
    ADD CONSTRAINT audit_log_route_check CHECK ((route_id IS NULL) = (action = 'policy'));

-- Notifications name the service from the audit row's own columns (a policy change has
-- no route to read them from).
CREATE OR REPLACE FUNCTION notify_route_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('traffic_manager_changes', concat_ws(' ',
        TG_TABLE_SCHEMA, 'routes', NEW.tenant, NEW.service, NEW.env,
        (extract(epoch FROM NEW.at) * 1000000)::bigint,
        COALESCE(current_setting('traffic_manager.instance', true), '')));
    RETURN NULL;
END;
$$;
