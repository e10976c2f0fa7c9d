-- The outbox: one event per change (route or API key), written in the change's own
-- transaction, so an event exists exactly when its change does. Writes are
-- serialized, so `seq` is commit order; AUTOINCREMENT never hands out a purged seq
-- again.
CREATE TABLE events (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id      TEXT    NOT NULL UNIQUE CHECK (length(id) = 36),
    type    TEXT    NOT NULL CHECK (type IN ('route.created', 'route.updated', 'route.activated',
                                             'route.deactivated', 'route.deleted',
                                             'key.created', 'key.revoked')),
    tenant  TEXT    CHECK (tenant IS NULL
                           OR (length(tenant) BETWEEN 1 AND 63
                               AND tenant NOT GLOB '*[^a-z0-9._-]*'
                               AND substr(tenant, 1, 1) GLOB '[a-z0-9]')),
    subject TEXT    NOT NULL,
    time    TEXT    NOT NULL,
    data    TEXT    NOT NULL
) STRICT;

CREATE INDEX events_tenant ON events (tenant, seq);
CREATE INDEX events_time ON events (time);
