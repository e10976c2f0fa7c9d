-- Who created or revoked which key, and what the key was allowed to do: the audit
-- trail of API keys, written in the same transaction as the key row. Never the secret
-- nor its hash. A table of its own, so that the routes' change feed never sees it.
CREATE TABLE key_audit_log (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text        NOT NULL,
    action text        NOT NULL CHECK (action IN ('create', 'revoke')),
    key_id uuid        NOT NULL,
    role   text        NOT NULL CHECK (role IN ('admin', 'tenant_admin', 'reader')),
    tenant text        CHECK (tenant COLLATE "C" ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    CHECK ((role = 'admin') = (tenant IS NULL))
);

CREATE INDEX key_audit_log_key ON key_audit_log (key_id, id);
