-- Which invite each member joined with, so that a kick revokes the link the kicked user came in
-- by: a kick keyed on the user id alone is undone by a new guest session holding the same link.
-- A member may have joined with several over time (kicked, then invited again); the host, and a
-- member who returned after leaving, joined with none. Rows go with their member, invite or room.
CREATE TABLE member_invites (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    invite_id  TEXT NOT NULL REFERENCES invites (invite_id) ON DELETE CASCADE,
    joined_ts  BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, invite_id),
    FOREIGN KEY (room_id, user_id) REFERENCES room_members (room_id, user_id) ON DELETE CASCADE
);
CREATE INDEX member_invites_invite_id ON member_invites (invite_id);
