-- Answers to writes sent with an Idempotency-Key, so a repeat gets the first answer.
-- `response` is NULL while the first request is being answered; times are Unix ms.
CREATE TABLE idempotency_keys (
    scope       text   NOT NULL CHECK (char_length(scope) BETWEEN 1 AND 64),
    key         text   NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint text   NOT NULL CHECK (char_length(fingerprint) = 64),
    response    text,
    expires_at  bigint NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
