DROP TRIGGER rooms_delete_events ON rooms;
DROP FUNCTION delete_events_of_deleted_rooms();
DELETE FROM events e WHERE NOT EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = e.room_id);
ALTER TABLE events ADD CONSTRAINT events_room_id_fkey
    FOREIGN KEY (room_id) REFERENCES rooms (room_id) ON DELETE CASCADE;
