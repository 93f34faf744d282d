-- Who is connected to which room, across the workers of one homeserver (README, "Scaling out").
--
-- A room's capacity is decided here, under the room's row lock, so that two workers admitting
-- at once cannot both take the last place: a row per device connected through a live worker (its
-- own sockets, and on the room's origin the devices other servers announced to it). `conn_id`
-- tells a device's current socket from one it replaced, so that the old one's leaving deletes
-- nothing of the new one's.
CREATE TABLE room_devices (
    room_id      TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    worker_id    TEXT NOT NULL,
    conn_id      BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id, device_id)
);
CREATE INDEX room_devices_worker_id ON room_devices (worker_id);

-- Live WebSocket connections, so that the limits per user and per client address hold across
-- workers. Rows of a worker whose lease ran out do not count, and the sweeper deletes them.
CREATE TABLE worker_connections (
    worker_id TEXT NOT NULL,
    conn_id   BIGINT NOT NULL,
    user_id   TEXT NOT NULL,
    address   TEXT NOT NULL,
    PRIMARY KEY (worker_id, conn_id)
);
CREATE INDEX worker_connections_user_id ON worker_connections (user_id);
CREATE INDEX worker_connections_address ON worker_connections (address);

-- The inbound federation transaction each origin has being handled, so that one origin has one
-- at a time across workers (as a sender keeps one in flight per destination). A row of a worker
-- whose lease ran out may be taken over.
CREATE TABLE inbound_transactions (
    origin    TEXT PRIMARY KEY,
    worker_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL
);
CREATE INDEX inbound_transactions_worker_id ON inbound_transactions (worker_id);
