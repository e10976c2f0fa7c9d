-- Every committed change wakes the instances listening on `traffic_manager_changes`;
-- notifications are delivered when their transaction commits. Channels are
-- database-wide, so each payload starts with the schema, and instances of other
-- schemas ignore it.
--
-- A route change names its service, when it was made (microseconds since the epoch)
-- and the instance that made it (the session setting `traffic_manager.instance`,
-- empty if unset), so that listeners re-read just that service, and the instance
-- that made the change, which has applied it already, does nothing:
--     <schema> routes <tenant> <service> <env> <micros> <instance>
-- A key change says only that keys changed (one notification per transaction):
--     <schema> keys
CREATE FUNCTION notify_route_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    route jsonb := COALESCE(NEW.after, NEW.before);
BEGIN
    PERFORM pg_notify('traffic_manager_changes', concat_ws(' ',
        TG_TABLE_SCHEMA, 'routes', route->>'tenant', route->>'service', route->>'env',
        (extract(epoch FROM NEW.at) * 1000000)::bigint,
        COALESCE(current_setting('traffic_manager.instance', true), '')));
    RETURN NULL;
END;
$$;

CREATE TRIGGER audit_log_notify AFTER INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION notify_route_change();

CREATE FUNCTION notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('traffic_manager_changes', TG_TABLE_SCHEMA || ' keys');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_key_change();
