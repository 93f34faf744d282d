DROP INDEX federation_outbound_room;
DROP INDEX sessions_last_seen_ts;
