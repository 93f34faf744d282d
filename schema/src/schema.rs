// @generated automatically by Diesel CLI.

diesel::table! {
    bus_spill (id) {
        id -> Int8,
        payload -> Text,
        created_ts -> Int8,
    }
}

diesel::table! {
    events (room_id, seq) {
        room_id -> Text,
        seq -> Int8,
        sender -> Text,
        device_id -> Text,
        origin_ts -> Int8,
        content -> Jsonb,
        txn_id -> Nullable<Text>,
    }
}

diesel::table! {
    federation_acl_overrides (server_name) {
        server_name -> Text,
        allowed -> Bool,
        updated_ts -> Int8,
    }
}

diesel::table! {
    federation_destinations (destination) {
        destination -> Text,
        failures -> Int4,
        retry_after_ts -> Nullable<Int8>,
        last_success_ts -> Nullable<Int8>,
        last_failure_ts -> Nullable<Int8>,
        failing_since_ts -> Nullable<Int8>,
        given_up_ts -> Nullable<Int8>,
        dropped_pdus -> Int8,
    }
}

diesel::table! {
    federation_outbound (seq) {
        seq -> Int8,
        destination -> Text,
        pdu -> Jsonb,
        created_ts -> Int8,
        txn_id -> Nullable<Text>,
        attempts -> Int4,
    }
}

diesel::table! {
    federation_received_txns (origin, txn_id) {
        origin -> Text,
        txn_id -> Text,
        received_ts -> Int8,
        response -> Jsonb,
    }
}

diesel::table! {
    inbound_transactions (origin) {
        origin -> Text,
        worker_id -> Text,
        txn_id -> Text,
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
    knocks (room_id, user_id) {
        room_id -> Text,
        user_id -> Text,
        display_name -> Text,
        invite_id -> Text,
        state -> Text,
        created_ts -> Int8,
        updated_ts -> Int8,
    }
}

diesel::table! {
    member_invites (room_id, user_id, invite_id) {
        room_id -> Text,
        user_id -> Text,
        invite_id -> Text,
        joined_ts -> Int8,
    }
}

diesel::table! {
    room_devices (room_id, user_id, device_id) {
        room_id -> Text,
        user_id -> Text,
        device_id -> Text,
        worker_id -> Text,
        conn_id -> Int8,
        display_name -> Text,
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
    room_servers (room_id, server_name) {
        room_id -> Text,
        server_name -> Text,
    }
}

diesel::table! {
    room_workers (room_id, worker_id) {
        room_id -> Text,
        worker_id -> Text,
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
        guests_may_share -> Bool,
        lobby -> Bool,
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

diesel::table! {
    worker_connections (worker_id, conn_id) {
        worker_id -> Text,
        conn_id -> Int8,
        user_id -> Text,
        address -> Text,
    }
}

diesel::table! {
    workers (worker_id) {
        worker_id -> Text,
        started_ts -> Int8,
        lease_until_ts -> Int8,
    }
}

diesel::joinable!(events -> rooms (room_id));
diesel::joinable!(invites -> rooms (room_id));
diesel::joinable!(knocks -> invites (invite_id));
diesel::joinable!(knocks -> rooms (room_id));
diesel::joinable!(member_invites -> invites (invite_id));
diesel::joinable!(room_devices -> rooms (room_id));
diesel::joinable!(room_members -> rooms (room_id));
diesel::joinable!(room_servers -> rooms (room_id));
diesel::joinable!(room_workers -> rooms (room_id));

diesel::allow_tables_to_appear_in_same_query!(
    bus_spill,
    events,
    federation_acl_overrides,
    federation_destinations,
    federation_outbound,
    federation_received_txns,
    inbound_transactions,
    invites,
    knocks,
    member_invites,
    room_devices,
    room_members,
    room_servers,
    room_workers,
    rooms,
    sessions,
    worker_connections,
    workers,
);
