-- Chat transaction ids (README, "Hardening", exactly once): a client resending a message whose
-- ack was lost, and a forwarded batch replayed, get the first answer rather than a second event.
-- The id is kept on the event itself, as long as its room: the unique index turns a repeat into
-- a conflict of the insert, so a message that is not a repeat costs no lookup.
ALTER TABLE events ADD COLUMN txn_id TEXT;

CREATE UNIQUE INDEX events_txn_id ON events (room_id, sender, device_id, txn_id)
    WHERE txn_id IS NOT NULL;
