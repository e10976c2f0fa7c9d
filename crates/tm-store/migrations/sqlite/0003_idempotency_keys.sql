-- Answers to writes sent with an Idempotency-Key, so a repeat gets the first answer.
-- `response` is NULL while the first request is being answered; times are Unix ms.
CREATE TABLE idempotency_keys (
    scope       TEXT    NOT NULL CHECK (length(scope) BETWEEN 1 AND 64),
    key         TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint TEXT    NOT NULL CHECK (length(fingerprint) = 64),
    response    TEXT,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
