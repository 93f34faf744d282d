-- Giving up on a destination that never comes back (`federation.give_up_after`).
-- `failing_since_ts`: when the current run of failures began (cleared by a success or an
-- operator's retry), so that "failing for longer than give_up_after" survives restarts.
-- `given_up_ts`: when its queue was dropped; while set, nothing new is queued for it.
-- `dropped_pdus`: persistent events dropped for it, in total: at give-up, and while given up.
ALTER TABLE federation_destinations
    ADD COLUMN failing_since_ts BIGINT,
    ADD COLUMN given_up_ts BIGINT,
    ADD COLUMN dropped_pdus BIGINT NOT NULL DEFAULT 0;
