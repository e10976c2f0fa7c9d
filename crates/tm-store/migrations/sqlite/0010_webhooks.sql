-- Webhook subscriptions: a tenant's URL that receives the tenant's change events (every
-- type, or those of `event_types`, a JSON array). The signing secret is kept sealed
-- (encrypted with the service's secret key, bound to the subscription's id): the
-- database file alone never reveals it.
CREATE TABLE webhooks (
    id            TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    tenant        TEXT NOT NULL CHECK (length(tenant) BETWEEN 1 AND 63
                                       AND tenant NOT GLOB '*[^a-z0-9._-]*'
                                       AND substr(tenant, 1, 1) GLOB '[a-z0-9]'),
    url           TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    event_types   TEXT NOT NULL,
    description   TEXT CHECK (length(description) <= 200),
    sealed_secret TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;

CREATE INDEX webhooks_tenant ON webhooks (tenant, id);
