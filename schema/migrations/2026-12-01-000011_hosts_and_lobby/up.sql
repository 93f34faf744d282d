-- Hosts that do not get lost, and a lobby (issue 11, item 7).
--
-- Roles: `rooms.host_user_id` is the room's one host (the creator, or who took over); a member
-- whose `room_members.is_host` is set is the host or a co-host, with the host's authority but
-- for naming co-hosts and closing the room. When the host leaves for good, the origin names the
-- longest-present co-host, else the longest-present member, host, in one `role` event.
--
-- The lobby: with `rooms.lobby` set, a newcomer with a valid invite who finds the room locked
-- knocks instead of being refused; the hosts admit or refuse. A knock lives in `knocks` until it
-- is answered and used, or until it lapses; it goes with its room or its invite.
ALTER TABLE rooms ADD COLUMN lobby BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE knocks (
    room_id      TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    invite_id    TEXT NOT NULL REFERENCES invites (invite_id) ON DELETE CASCADE,
    -- 'pending', 'admitted' or 'refused'
    state        TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    updated_ts   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX knocks_invite_id ON knocks (invite_id);
