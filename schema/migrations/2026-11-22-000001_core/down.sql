DROP TABLE events;
DROP TABLE invites;
DROP TABLE room_members;
DROP TABLE rooms;
DROP TABLE sessions;
