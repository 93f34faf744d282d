DROP INDEX events_txn_id;
ALTER TABLE events DROP COLUMN txn_id;
