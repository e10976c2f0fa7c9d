-- Webhook subscriptions: a tenant's URL that receives the tenant's change events (every
-- type, or those of `event_types`, a JSON array). The signing secret is kept sealed
-- (encrypted with the service's secret key, bound to the subscription's id): the
-- database alone never reveals it.
CREATE TABLE webhooks (
    id            uuid        NOT NULL PRIMARY KEY,
    tenant        text        NOT NULL CHECK (tenant COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    url           text        NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    event_types   jsonb       NOT NULL,
    description   text        CHECK (char_length(description) <= 200),
    sealed_secret text        NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE INDEX webhooks_tenant ON webhooks (tenant, id);
