-- The outbox: one event per change (route or API key), written in the change's own
-- transaction, so an event exists exactly when its change does. Readers (the event
-- API, the relays to Kafka and webhooks) go through it in (txid, seq) order, and only
-- through rows of transactions older than every transaction still running, as the
-- change feed does: a row that commits late is never skipped.
CREATE TABLE events (
    seq     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid    xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id      uuid        NOT NULL UNIQUE,
    type    text        NOT NULL CHECK (type IN ('route.created', 'route.updated', 'route.activated',
                                                 'route.deactivated', 'route.deleted',
                                                 'key.created', 'key.revoked')),
    tenant  text        CHECK (tenant COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    subject text        NOT NULL,
    time    timestamptz NOT NULL,
    data    jsonb       NOT NULL
);

CREATE INDEX events_feed ON events (txid, seq);
CREATE INDEX events_tenant_feed ON events (tenant, txid, seq);
CREATE INDEX events_time ON events (time);
