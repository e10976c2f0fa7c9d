-- The services with a policy of their own, which the health probes read every interval:
-- few among many, so they are found by this index rather than by reading every route.
CREATE INDEX services_with_policy ON services (tenant, service, env) WHERE policy IS NOT NULL;
