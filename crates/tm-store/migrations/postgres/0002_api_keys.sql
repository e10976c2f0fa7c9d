-- API keys: only the SHA-256 of each secret is kept. Admin keys have no tenant; every
-- other key has exactly one.
CREATE TABLE api_keys (
    id          uuid        NOT NULL PRIMARY KEY,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    role        text        NOT NULL CHECK (role IN ('admin', 'tenant_admin', 'reader')),
    tenant      text        CHECK (tenant COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    secret_hash bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK ((role = 'admin') = (tenant IS NULL))
);

CREATE INDEX api_keys_tenant ON api_keys (tenant) WHERE revoked_at IS NULL;

-- One row once the first admin key has been made, so it is made exactly once.
CREATE TABLE bootstrap (
    id         smallint    NOT NULL PRIMARY KEY CHECK (id = 1),
    key_id     uuid        NOT NULL,
    created_at timestamptz NOT NULL
);
