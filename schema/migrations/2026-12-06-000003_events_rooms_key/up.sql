-- The events of a room go with it, as before, but no longer through a foreign key: its check ran
-- a `SELECT … FOR KEY SHARE` of the room for every inserted event (a sixth of Postgres's CPU in
-- the chat benchmark), and it guarded nothing the appenders do not already hold. Every insert
-- into `events` runs in a transaction that has locked the room's row first (`NumberRooms` for
-- the room's own events, `rooms_for_update` for a replica's), so the room cannot be deleted
-- before that transaction ends, and one deleted before it is not found and gets no event.
ALTER TABLE events DROP CONSTRAINT events_room_id_fkey;

CREATE FUNCTION delete_events_of_deleted_rooms() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events e USING gone g WHERE e.room_id = g.room_id;
    RETURN NULL;
END
$$;

-- Once per statement, whatever the number of rooms it deletes (the sweeper deletes many).
CREATE TRIGGER rooms_delete_events AFTER DELETE ON rooms
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION delete_events_of_deleted_rooms();
