-- Where each relay of the outbox (to Kafka, to webhooks) stands: the position of the
-- last event it handed on. A relay moves its cursor only from where it read it
-- (compare and set), so a relay that lost its job to another cannot move it back.
CREATE TABLE outbox_cursors (
    sink       text        NOT NULL PRIMARY KEY CHECK (char_length(sink) BETWEEN 1 AND 64),
    txid       bigint      NOT NULL,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
