-- The change feed: instances read the audit log in (transaction, id) order, and only
-- rows of transactions older than every transaction still running, so a row that
-- commits late can never be skipped.
ALTER TABLE audit_log ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX audit_log_feed ON audit_log (txid, id);
