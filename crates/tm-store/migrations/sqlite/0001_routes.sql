-- Routes and their audit trail. The CHECKs repeat the domain's rules so that no
-- writer, however buggy, can store a route the API would refuse.
CREATE TABLE routes (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    tenant     TEXT    NOT NULL CHECK (length(tenant) BETWEEN 1 AND 63
                                       AND tenant NOT GLOB '*[^a-z0-9._-]*'
                                       AND substr(tenant, 1, 1) GLOB '[a-z0-9]'),
    service    TEXT    NOT NULL CHECK (length(service) BETWEEN 1 AND 63
                                       AND service NOT GLOB '*[^a-z0-9._-]*'
                                       AND substr(service, 1, 1) GLOB '[a-z0-9]'),
    env        TEXT    NOT NULL CHECK (length(env) BETWEEN 1 AND 63
                                       AND env NOT GLOB '*[^a-z0-9._-]*'
                                       AND substr(env, 1, 1) GLOB '[a-z0-9]'),
    version    TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 63
                                       AND version NOT GLOB '*[^a-z0-9._-]*'
                                       AND substr(version, 1, 1) GLOB '[a-z0-9]'),
    url        TEXT    NOT NULL CHECK (length(url) BETWEEN 1 AND 2048
                                       AND (lower(substr(url, 1, 7)) = 'http://'
                                            OR lower(substr(url, 1, 8)) = 'https://')),
    active     INTEGER NOT NULL CHECK (active IN (0, 1)),
    weight     INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 100),
    revision   INTEGER NOT NULL CHECK (revision >= 1),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    CONSTRAINT routes_natural_key UNIQUE (tenant, service, env, version)
) STRICT;

CREATE INDEX routes_active ON routes (tenant, service, env) WHERE active = 1;

CREATE TABLE audit_log (
    id       INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at       TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL CHECK (action IN ('create', 'activate', 'deactivate', 'update', 'delete')),
    route_id TEXT    NOT NULL,
    before   TEXT,
    after    TEXT
) STRICT;

CREATE INDEX audit_log_route ON audit_log (route_id, id);
