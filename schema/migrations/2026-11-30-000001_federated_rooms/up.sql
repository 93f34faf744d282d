-- Federated rooms (DESIGN.md, "Federation"). On a room's origin: the other servers taking part in
-- it, each sent every new event of the room once. A server is added when one of its users joins
-- and removed once it has been sent the event that ends its last member's membership.
CREATE TABLE room_servers (
    room_id      TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    server_name  TEXT NOT NULL,
    PRIMARY KEY (room_id, server_name)
);

-- The sender deletes a delivered transaction's rows by id; without this it would scan every row
-- queued for the destination, which is slowest exactly when a backlog builds up.
CREATE INDEX federation_outbound_txn ON federation_outbound (destination, txn_id)
    WHERE txn_id IS NOT NULL;
