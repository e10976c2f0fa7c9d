-- Where each relay of the outbox (to Kafka, to webhooks) stands: the seq of the last
-- event it handed on (txid is always 0 here). A relay moves its cursor only from where
-- it read it (compare and set), so a relay that lost its job to another cannot move it
-- back.
CREATE TABLE outbox_cursors (
    sink       TEXT    NOT NULL PRIMARY KEY CHECK (length(sink) BETWEEN 1 AND 64),
    txid       INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;
