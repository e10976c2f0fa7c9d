-- Routes and their audit trail. The CHECKs repeat the domain's rules so that no
-- writer, however buggy, can store a route the API would refuse.
CREATE TABLE routes (
    id         uuid        NOT NULL PRIMARY KEY,
    tenant     text        NOT NULL CHECK (tenant  COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    service    text        NOT NULL CHECK (service COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    env        text        NOT NULL CHECK (env     COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    version    text        NOT NULL CHECK (version COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    url        text        NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048 AND url ~* '^https?://'),
    active     boolean     NOT NULL,
    weight     smallint    NOT NULL CHECK (weight BETWEEN 0 AND 100),
    revision   bigint      NOT NULL CHECK (revision >= 1),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT routes_natural_key UNIQUE (tenant, service, env, version)
);

CREATE INDEX routes_active ON routes (tenant, service, env) WHERE active;

CREATE TABLE audit_log (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL,
    actor    text        NOT NULL,
    action   text        NOT NULL CHECK (action IN ('create', 'activate', 'deactivate', 'update', 'delete')),
    route_id uuid        NOT NULL,
    before   jsonb,
    after    jsonb
);

CREATE INDEX audit_log_route ON audit_log (route_id, id);
