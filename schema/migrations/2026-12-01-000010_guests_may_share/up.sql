-- A room setting kept by the room's origin and carried to replicas like the lock: whether any
-- joined member, not only the host, may make invite links. Invites remember who made them
-- (`invites.created_by`), so a kick also revokes the links the kicked member made.
ALTER TABLE rooms ADD COLUMN guests_may_share BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX invites_room_creator ON invites (room_id, created_by);
