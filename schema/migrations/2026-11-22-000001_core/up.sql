-- Guest sessions: no accounts, one user and one device per session. Only a hash of the access
-- token is stored, so a copy of the database cannot be used to impersonate anyone.
CREATE TABLE sessions (
    user_id       TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    token_hash    BYTEA NOT NULL UNIQUE,
    created_ts    BIGINT NOT NULL,
    last_seen_ts  BIGINT NOT NULL
);

-- Rooms are ephemeral: `expires_ts` is set when the last connected participant leaves and cleared
-- when someone connects; the sweeper deletes rows whose time has come, and every table below
-- cascades from here, so one DELETE removes a room with everything that belongs to it.
CREATE TABLE rooms (
    room_id       TEXT PRIMARY KEY,
    origin        TEXT NOT NULL,
    host_user_id  TEXT NOT NULL,
    locked        BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL,
    -- The sequence number of the newest event; events take the next numbers under this row's lock,
    -- which is what orders a room's events without a sequence object per room.
    last_seq      BIGINT NOT NULL DEFAULT 0,
    expires_ts    BIGINT
);
CREATE INDEX rooms_expires_ts ON rooms (expires_ts) WHERE expires_ts IS NOT NULL;
CREATE INDEX rooms_host_user_id ON rooms (host_user_id);

CREATE TABLE room_members (
    room_id       TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    is_host       BOOLEAN NOT NULL DEFAULT FALSE,
    -- 'joined', 'left' or 'kicked'.
    membership    TEXT NOT NULL CHECK (membership IN ('joined', 'left', 'kicked')),
    joined_ts     BIGINT NOT NULL,
    updated_ts    BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_id ON room_members (user_id);

CREATE TABLE invites (
    invite_id     TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    token_hash    BYTEA NOT NULL UNIQUE,
    created_by    TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    expires_ts    BIGINT,
    max_uses      INTEGER,
    uses          INTEGER NOT NULL DEFAULT 0,
    revoked_ts    BIGINT
);
CREATE INDEX invites_room_id ON invites (room_id);

-- The room's persisted, sequenced event log. Chat content is ciphertext only.
CREATE TABLE events (
    room_id       TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    sender        TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    origin_ts     BIGINT NOT NULL,
    content       JSONB NOT NULL,
    PRIMARY KEY (room_id, seq)
);
