-- API keys: only the SHA-256 of each secret is kept. Admin keys have no tenant; every
-- other key has exactly one.
CREATE TABLE api_keys (
    id          TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role        TEXT NOT NULL CHECK (role IN ('admin', 'tenant_admin', 'reader')),
    tenant      TEXT CHECK (tenant IS NULL
                            OR (length(tenant) BETWEEN 1 AND 63
                                AND tenant NOT GLOB '*[^a-z0-9._-]*'
                                AND substr(tenant, 1, 1) GLOB '[a-z0-9]')),
    secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    CHECK ((role = 'admin') = (tenant IS NULL))
) STRICT;

CREATE INDEX api_keys_tenant ON api_keys (tenant) WHERE revoked_at IS NULL;

-- One row once the first admin key has been made, so it is made exactly once.
CREATE TABLE bootstrap (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    key_id     TEXT    NOT NULL,
    created_at TEXT    NOT NULL
) STRICT;
