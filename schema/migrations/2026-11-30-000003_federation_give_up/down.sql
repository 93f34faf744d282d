ALTER TABLE federation_destinations
    DROP COLUMN dropped_pdus,
    DROP COLUMN given_up_ts,
    DROP COLUMN failing_since_ts;
