DROP INDEX invites_room_creator;
ALTER TABLE rooms DROP COLUMN guests_may_share;
