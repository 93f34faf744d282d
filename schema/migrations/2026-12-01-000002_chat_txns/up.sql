-- Chat transaction ids (README, "Exactly once"): a client resending a message whose ack was
-- lost, and a forwarded batch replayed, get the first answer rather than a second event. Kept a
-- day (the sweeper deletes older ones) and with the room: the key is the room, the sender's
-- device and the id the client chose.
CREATE TABLE chat_txns (
    room_id    TEXT   NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    txn_id     TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    origin_ts  BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, device_id, txn_id)
);

CREATE INDEX chat_txns_created_ts ON chat_txns (created_ts);
