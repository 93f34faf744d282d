-- Keeping nothing longer than promised (README, "Retention").

-- The session sweep looks for sessions unused since a cutoff (`sessions.idle_ttl`).
CREATE INDEX sessions_last_seen_ts ON sessions (last_seen_ts);

-- A deleted room's queued federation rows are deleted with it (all but its deletion notice),
-- found by the room id inside the PDU rather than by scanning the whole queue, which is largest
-- exactly when a peer is down.
CREATE INDEX federation_outbound_room ON federation_outbound ((pdu ->> 'room_id'));
