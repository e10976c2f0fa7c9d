-- Who created or revoked which key, and what the key was allowed to do: the audit
-- trail of API keys, written in the same transaction as the key row. Never the secret
-- nor its hash. A table of its own, so that the routes' change feed never sees it.
CREATE TABLE key_audit_log (
    id     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at     TEXT    NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL CHECK (action IN ('create', 'revoke')),
    key_id TEXT    NOT NULL CHECK (length(key_id) = 36),
    role   TEXT    NOT NULL CHECK (role IN ('admin', 'tenant_admin', 'reader')),
    tenant TEXT    CHECK (tenant IS NULL
                          OR (length(tenant) BETWEEN 1 AND 63
                              AND tenant NOT GLOB '*[^a-z0-9._-]*'
                              AND substr(tenant, 1, 1) GLOB '[a-z0-9]')),
    CHECK ((role = 'admin') = (tenant IS NULL))
) STRICT;

CREATE INDEX key_audit_log_key ON key_audit_log (key_id, id);
