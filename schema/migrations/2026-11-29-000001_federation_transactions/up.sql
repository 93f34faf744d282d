-- Federation transactions (DESIGN.md, "Federation"; Matrix server-server API, "Transactions").

-- Persistent events waiting for a destination to acknowledge them. A row is written before the
-- sender is told about it and deleted only after the destination answered 200 to the transaction
-- that carried it, so a restart or a peer that is down delays delivery, never loses it. `seq`
-- orders a destination's rows and is sent as the PDU's `order`. `txn_id` is set when the row joins
-- a transaction and kept for every retry of it, including after a restart, so the receiver can
-- recognise a retry by its id; only the oldest rows of a destination ever carry one.
CREATE TABLE federation_outbound (
    seq           BIGSERIAL PRIMARY KEY,
    destination   TEXT NOT NULL,
    pdu           JSONB NOT NULL,
    created_ts    BIGINT NOT NULL,
    txn_id        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX federation_outbound_destination ON federation_outbound (destination, seq);

-- How delivery to each destination is going, for the sender's backoff and for operators.
CREATE TABLE federation_destinations (
    destination      TEXT PRIMARY KEY,
    failures         INTEGER NOT NULL DEFAULT 0,
    retry_after_ts   BIGINT,
    last_success_ts  BIGINT,
    last_failure_ts  BIGINT
);

-- Transactions received, by origin and id, with the answer given: a retry of one (its answer
-- lost on the way back) gets the same answer without being handled twice. Pruned after a day.
CREATE TABLE federation_received_txns (
    origin        TEXT NOT NULL,
    txn_id        TEXT NOT NULL,
    received_ts   BIGINT NOT NULL,
    response      JSONB NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_received_txns_received_ts ON federation_received_txns (received_ts);
