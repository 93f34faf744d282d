// @generated automatically by Diesel CLI.

diesel::table! {
    events (room_id, seq) {
        room_id -> Text,
        seq -> Int8,
        sender -> Text,
        device_id -> Text,
        origin_ts -> Int8,
        content -> Jsonb,
    }
}

diesel::table! {
    invites (invite_id) {
        invite_id -> Text,
        room_id -> Text,
        token_hash -> Bytea,
        created_by -> Text,
        created_ts -> Int8,
        expires_ts -> Nullable<Int8>,
        max_uses -> Nullable<Int4>,
        uses -> Int4,
        revoked_ts -> Nullable<Int8>,
    }
}

diesel::table! {
    room_members (room_id, user_id) {
        room_id -> Text,
        user_id -> Text,
        display_name -> Text,
        is_host -> Bool,
        membership -> Text,
        joined_ts -> Int8,
        updated_ts -> Int8,
    }
}

diesel::table! {
    rooms (room_id) {
        room_id -> Text,
        origin -> Text,
        host_user_id -> Text,
        locked -> Bool,
        created_ts -> Int8,
        last_seq -> Int8,
        expires_ts -> Nullable<Int8>,
    }
}

diesel::table! {
    sessions (user_id) {
        user_id -> Text,
        device_id -> Text,
        display_name -> Text,
        token_hash -> Bytea,
        created_ts -> Int8,
        last_seen_ts -> Int8,
    }
}

diesel::joinable!(events -> rooms (room_id));
diesel::joinable!(invites -> rooms (room_id));
diesel::joinable!(room_members -> rooms (room_id));

diesel::allow_tables_to_appear_in_same_query!(events, invites, room_members, rooms, sessions,);
