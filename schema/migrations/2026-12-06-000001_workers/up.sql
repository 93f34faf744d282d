-- Several homeserver processes (workers) on one database (README, "Scaling out").
--
-- Each worker renews its row's lease a few times per lease; one whose lease ran out counts as
-- gone, whatever it may still believe. Times are the database's clock, so that workers on
-- machines whose clocks differ still agree on who is alive.
CREATE TABLE workers (
    worker_id      TEXT PRIMARY KEY,
    started_ts     BIGINT NOT NULL,
    lease_until_ts BIGINT NOT NULL
);

-- Which workers have devices connected to which room. A room's idle countdown runs only while
-- no live worker has a row for it; rows of a worker whose lease ran out are taken away (and the
-- countdown started) by the sweeper.
CREATE TABLE room_workers (
    room_id   TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    worker_id TEXT NOT NULL,
    PRIMARY KEY (room_id, worker_id)
);
CREATE INDEX room_workers_worker_id ON room_workers (worker_id);

-- A notification too large for Postgres's 8,000-byte payload waits here; the notification
-- carries its id, and the worker it is addressed to reads and deletes it.
CREATE TABLE bus_spill (
    id         BIGSERIAL PRIMARY KEY,
    payload    TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
