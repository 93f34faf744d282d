//! Every query Confab runs. Each takes a connection (or a transaction) and does one thing.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;
use crate::models::{
    AclOverride, Appended, DestinationState, Event, Invite, Knock, Member, NewEvent,
    NewOutboundPdu, OutboundPdu, ReceivedTxn, Room, Session, membership,
};
use crate::schema::{
    events, federation_acl_overrides, federation_destinations, federation_outbound,
    federation_received_txns, invites, room_members, room_servers, rooms, sessions,
};

type Conn = AsyncPgConnection;

// ---- sessions ------------------------------------------------------------------------------

/// Stores a new guest session.
pub async fn insert_session(conn: &mut Conn, session: &Session) -> Result<(), DbError> {
    diesel::insert_into(sessions::table)
        .values(session)
        .execute(conn)
        .await?;
    Ok(())
}

/// The session whose access token hashes to `token_hash`.
pub async fn session_by_token_hash(
    conn: &mut Conn,
    token_hash: &[u8],
) -> Result<Option<Session>, DbError> {
    Ok(sessions::table
        .filter(sessions::token_hash.eq(token_hash))
        .select(Session::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Ends a session: its token stops working.
pub async fn delete_session(conn: &mut Conn, user_id: &str) -> Result<bool, DbError> {
    let n = diesel::delete(sessions::table.find(user_id))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Records that a session was used at `now_ts`, unless that was already recorded since
/// `stale_before` (so a busy session costs one write per period, not one per request); returns
/// whether it wrote.
pub async fn touch_session(
    conn: &mut Conn,
    user_id: &str,
    now_ts: i64,
    stale_before: i64,
) -> Result<bool, DbError> {
    let n = diesel::update(
        sessions::table
            .find(user_id)
            .filter(sessions::last_seen_ts.lt(stale_before)),
    )
    .set(sessions::last_seen_ts.eq(now_ts))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Deletes at most `limit` guest sessions unused since `unused_since` that are members of no
/// room (a membership row exists only while its room does: rooms cascade to them); returns
/// their user ids.
pub async fn delete_idle_sessions(
    conn: &mut Conn,
    unused_since: i64,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    use diesel::sql_types::BigInt;
    #[derive(QueryableByName)]
    struct Deleted {
        #[diesel(sql_type = diesel::sql_types::Text)]
        user_id: String,
    }
    // Raw SQL: diesel's DSL cannot delete from a table filtered by a subquery on that table.
    let deleted: Vec<Deleted> = diesel::sql_query(
        "DELETE FROM sessions WHERE user_id IN ( \
             SELECT s.user_id FROM sessions s \
             WHERE s.last_seen_ts < $1 \
             AND NOT EXISTS (SELECT 1 FROM room_members m WHERE m.user_id = s.user_id) \
             ORDER BY s.last_seen_ts LIMIT $2) \
         RETURNING user_id",
    )
    .bind::<BigInt, _>(unused_since)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(deleted.into_iter().map(|d| d.user_id).collect())
}

// ---- rooms ---------------------------------------------------------------------------------

/// Stores a new room.
pub async fn insert_room(conn: &mut Conn, room: &Room) -> Result<(), DbError> {
    diesel::insert_into(rooms::table)
        .values(room)
        .execute(conn)
        .await?;
    Ok(())
}

/// A room by id.
pub async fn room(conn: &mut Conn, room_id: &str) -> Result<Option<Room>, DbError> {
    Ok(rooms::table
        .find(room_id)
        .select(Room::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A room by id, locked against concurrent changes until the transaction ends, so that a join
/// decision and the writes it leads to see one consistent room.
pub async fn room_for_update(conn: &mut Conn, room_id: &str) -> Result<Option<Room>, DbError> {
    Ok(rooms::table
        .find(room_id)
        .select(Room::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// Sets the lock flag; `None` if the room does not exist.
pub async fn set_room_locked(
    conn: &mut Conn,
    room_id: &str,
    locked: bool,
) -> Result<Option<Room>, DbError> {
    Ok(diesel::update(rooms::table.find(room_id))
        .set(rooms::locked.eq(locked))
        .returning(Room::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Sets whether a locked room has a lobby; `None` if the room does not exist.
pub async fn set_room_lobby(
    conn: &mut Conn,
    room_id: &str,
    lobby: bool,
) -> Result<Option<Room>, DbError> {
    Ok(diesel::update(rooms::table.find(room_id))
        .set(rooms::lobby.eq(lobby))
        .returning(Room::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Names the room's host; `None` if the room does not exist.
pub async fn set_room_host(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
) -> Result<Option<Room>, DbError> {
    Ok(diesel::update(rooms::table.find(room_id))
        .set(rooms::host_user_id.eq(user_id))
        .returning(Room::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Sets whether a member is the host or a co-host; `false` if they were never a member.
pub async fn set_member_is_host(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    is_host: bool,
) -> Result<bool, DbError> {
    let n = diesel::update(room_members::table.find((room_id, user_id)))
        .set(room_members::is_host.eq(is_host))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Sets whether any joined member may make invite links; `None` if the room does not exist.
pub async fn set_room_guests_may_share(
    conn: &mut Conn,
    room_id: &str,
    guests_may_share: bool,
) -> Result<Option<Room>, DbError> {
    Ok(diesel::update(rooms::table.find(room_id))
        .set(rooms::guests_may_share.eq(guests_may_share))
        .returning(Room::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Sets (or with `None` clears) the time at which an idle room is deleted; `None` if the room no
/// longer exists.
pub async fn set_room_expiry(
    conn: &mut Conn,
    room_id: &str,
    expires_ts: Option<i64>,
) -> Result<Option<Room>, DbError> {
    Ok(diesel::update(rooms::table.find(room_id))
        .set(rooms::expires_ts.eq(expires_ts))
        .returning(Room::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// The PDU type of a room's deletion notice (`confab.room_deleted`): the one queued row of a
/// deleted room that is kept, until delivered or given up, so that replicas purge their copy.
pub const ROOM_DELETED_PDU: &str = "confab.room_deleted";

/// Deletes a room and, by cascade, everything that belongs to it, with the rows queued for
/// other servers about it (but for a deletion notice: see [`ROOM_DELETED_PDU`]).
pub async fn delete_room(conn: &mut Conn, room_id: &str) -> Result<bool, DbError> {
    let n = diesel::delete(rooms::table.find(room_id))
        .execute(conn)
        .await?;
    if n > 0 {
        delete_outbound_of_room(conn, room_id).await?;
    }
    Ok(n > 0)
}

/// Deletes every room whose idle deadline has passed (and their queued rows, as
/// [`delete_room`]); returns their ids.
pub async fn delete_expired_rooms(conn: &mut Conn, now_ts: i64) -> Result<Vec<String>, DbError> {
    let deleted: Vec<String> = diesel::delete(rooms::table.filter(rooms::expires_ts.le(now_ts)))
        .returning(rooms::room_id)
        .get_results(conn)
        .await?;
    for room_id in &deleted {
        delete_outbound_of_room(conn, room_id).await?;
    }
    Ok(deleted)
}

/// Deletes the rows queued for other servers about a room that is gone, but for its deletion
/// notice: events of a room that no longer exists must not wait in the queue (for up to
/// `federation.give_up_after` while a peer is down) after the room and its log are gone.
/// Rows already in a transaction go too; a retry of that transaction carries what is left.
async fn delete_outbound_of_room(conn: &mut Conn, room_id: &str) -> Result<usize, DbError> {
    use diesel::sql_types::Text;
    Ok(diesel::sql_query(
        "DELETE FROM federation_outbound WHERE (pdu ->> 'room_id') = $1 \
         AND (pdu ->> 'type') IS DISTINCT FROM $2",
    )
    .bind::<Text, _>(room_id)
    .bind::<Text, _>(ROOM_DELETED_PDU)
    .execute(conn)
    .await?)
}

/// The rooms whose idle deadline has passed, oldest deadline first, at most `limit`.
pub async fn expired_rooms(
    conn: &mut Conn,
    now_ts: i64,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    Ok(rooms::table
        .filter(rooms::expires_ts.le(now_ts))
        .order(rooms::expires_ts.asc())
        .limit(limit)
        .select(rooms::room_id)
        .load(conn)
        .await?)
}

/// Deletes a room if its idle deadline has passed (someone may have come back since it was
/// listed), with its queued rows as [`delete_room`]; returns whether it did.
pub async fn delete_room_if_expired(
    conn: &mut Conn,
    room_id: &str,
    now_ts: i64,
) -> Result<bool, DbError> {
    let n = diesel::delete(
        rooms::table
            .find(room_id)
            .filter(rooms::expires_ts.le(now_ts)),
    )
    .execute(conn)
    .await?;
    if n > 0 {
        delete_outbound_of_room(conn, room_id).await?;
    }
    Ok(n > 0)
}

// ---- federated rooms ---------------------------------------------------------------------------

/// The other servers taking part in a room (on its origin).
pub async fn room_servers(conn: &mut Conn, room_id: &str) -> Result<Vec<String>, DbError> {
    Ok(room_servers::table
        .filter(room_servers::room_id.eq(room_id))
        .order(room_servers::server_name.asc())
        .select(room_servers::server_name)
        .load(conn)
        .await?)
}

/// Adds a server to those taking part in a room.
pub async fn add_room_server(conn: &mut Conn, room_id: &str, server: &str) -> Result<(), DbError> {
    diesel::insert_into(room_servers::table)
        .values((
            room_servers::room_id.eq(room_id),
            room_servers::server_name.eq(server),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes a server from those taking part in a room.
pub async fn remove_room_server(
    conn: &mut Conn,
    room_id: &str,
    server: &str,
) -> Result<(), DbError> {
    diesel::delete(room_servers::table.find((room_id, server)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates or refreshes a replica of another server's room from the state it sent: the room row
/// (keeping the newest sequence number either side has) and no events yet.
pub async fn upsert_replica_room(conn: &mut Conn, room: &Room) -> Result<(), DbError> {
    diesel::insert_into(rooms::table)
        .values(room)
        .on_conflict(rooms::room_id)
        .do_update()
        .set((
            rooms::host_user_id.eq(excluded(rooms::host_user_id)),
            rooms::locked.eq(excluded(rooms::locked)),
            rooms::guests_may_share.eq(excluded(rooms::guests_may_share)),
            rooms::lobby.eq(excluded(rooms::lobby)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a replica's membership as the origin states it, host flag included.
pub async fn put_replica_member(conn: &mut Conn, member: &Member) -> Result<(), DbError> {
    diesel::insert_into(room_members::table)
        .values(member)
        .on_conflict((room_members::room_id, room_members::user_id))
        .do_update()
        .set((
            room_members::membership.eq(excluded(room_members::membership)),
            room_members::display_name.eq(excluded(room_members::display_name)),
            room_members::is_host.eq(excluded(room_members::is_host)),
            room_members::updated_ts.eq(excluded(room_members::updated_ts)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Appends events the room's origin numbered to replicas, in one statement, and moves each
/// room's newest sequence number to `newest`. The caller holds the rooms' rows
/// (`rooms_for_update`) and passes only events that follow on from them; one already stored is
/// skipped.
pub async fn insert_replica_events(
    conn: &mut Conn,
    new_events: &[Event],
    newest: &[(String, i64)],
) -> Result<(), DbError> {
    use diesel::sql_types::{Array, BigInt, Text};

    // Postgres allows 65535 bind parameters per statement; six per row.
    for chunk in new_events.chunks(10_000) {
        diesel::insert_into(events::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
    }
    if newest.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = newest.iter().map(|(r, _)| r.as_str()).collect();
    let seqs: Vec<i64> = newest.iter().map(|(_, s)| *s).collect();
    diesel::sql_query(
        "UPDATE rooms SET last_seq = v.seq FROM unnest($1::text[], $2::bigint[]) AS v(room_id, seq) \
         WHERE rooms.room_id = v.room_id AND rooms.last_seq < v.seq",
    )
    .bind::<Array<Text>, _>(&ids)
    .bind::<Array<BigInt>, _>(&seqs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Rooms by id, without locking them.
pub async fn rooms_by_ids(conn: &mut Conn, room_ids: &[&str]) -> Result<Vec<Room>, DbError> {
    Ok(rooms::table
        .filter(rooms::room_id.eq_any(room_ids))
        .select(Room::as_select())
        .load(conn)
        .await?)
}

/// Rooms by id, locked for the caller's transaction in id order (so that two transactions
/// locking overlapping sets cannot deadlock).
pub async fn rooms_for_update(conn: &mut Conn, room_ids: &[&str]) -> Result<Vec<Room>, DbError> {
    Ok(rooms::table
        .filter(rooms::room_id.eq_any(room_ids))
        .order(rooms::room_id.asc())
        .select(Room::as_select())
        .for_update()
        .load(conn)
        .await?)
}

/// The rooms `user_id` is a joined member of, newest first.
pub async fn rooms_of_user(conn: &mut Conn, user_id: &str) -> Result<Vec<Room>, DbError> {
    Ok(rooms::table
        .inner_join(room_members::table)
        .filter(room_members::user_id.eq(user_id))
        .filter(room_members::membership.eq(membership::JOINED))
        .order(rooms::created_ts.desc())
        .select(Room::as_select())
        .load(conn)
        .await?)
}

/// How many live rooms `user_id` hosts.
pub async fn count_hosted_rooms(conn: &mut Conn, user_id: &str) -> Result<i64, DbError> {
    Ok(rooms::table
        .filter(rooms::host_user_id.eq(user_id))
        .count()
        .get_result(conn)
        .await?)
}

/// Every room, for operators and metrics.
pub async fn count_rooms(conn: &mut Conn) -> Result<i64, DbError> {
    Ok(rooms::table.count().get_result(conn).await?)
}

// ---- members -------------------------------------------------------------------------------

/// One user's membership of a room.
pub async fn member(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
) -> Result<Option<Member>, DbError> {
    Ok(room_members::table
        .find((room_id, user_id))
        .select(Member::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A room and its members in one statement, so both come from one snapshot: the membership as it
/// stood at the room's `last_seq`. A room's live owner starts from this and follows the events
/// after it.
pub async fn room_with_members(
    conn: &mut Conn,
    room_id: &str,
) -> Result<Option<(Room, Vec<Member>)>, DbError> {
    let rows: Vec<(Room, Option<Member>)> = rooms::table
        .left_join(room_members::table)
        .filter(rooms::room_id.eq(room_id))
        .select((Room::as_select(), Option::<Member>::as_select()))
        .load(conn)
        .await?;
    let mut rows = rows.into_iter();
    let Some((room, first)) = rows.next() else {
        return Ok(None);
    };
    let members = first
        .into_iter()
        .chain(rows.filter_map(|(_, m)| m))
        .collect();
    Ok(Some((room, members)))
}

/// Every member of a room, in the order they first joined.
pub async fn members(conn: &mut Conn, room_id: &str) -> Result<Vec<Member>, DbError> {
    Ok(room_members::table
        .filter(room_members::room_id.eq(room_id))
        .order(room_members::joined_ts.asc())
        .select(Member::as_select())
        .load(conn)
        .await?)
}

/// Inserts a membership, or updates its state, name and time if the user was a member before
/// (keeping their first join time and host flag).
pub async fn upsert_member(conn: &mut Conn, member: &Member) -> Result<(), DbError> {
    diesel::insert_into(room_members::table)
        .values(member)
        .on_conflict((room_members::room_id, room_members::user_id))
        .do_update()
        .set((
            room_members::membership.eq(excluded(room_members::membership)),
            room_members::display_name.eq(excluded(room_members::display_name)),
            room_members::updated_ts.eq(excluded(room_members::updated_ts)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Changes a member's state; `false` if they were never a member.
pub async fn set_membership(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    state: &str,
    now_ts: i64,
) -> Result<bool, DbError> {
    let n = diesel::update(room_members::table.find((room_id, user_id)))
        .set((
            room_members::membership.eq(state),
            room_members::updated_ts.eq(now_ts),
        ))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

// ---- invites -------------------------------------------------------------------------------

/// Stores a new invite.
pub async fn insert_invite(conn: &mut Conn, invite: &Invite) -> Result<(), DbError> {
    diesel::insert_into(invites::table)
        .values(invite)
        .execute(conn)
        .await?;
    Ok(())
}

/// The invite whose token hashes to `token_hash`, locked until the transaction ends so that
/// concurrent joins cannot both take its last use.
pub async fn invite_by_token_hash_for_update(
    conn: &mut Conn,
    token_hash: &[u8],
) -> Result<Option<Invite>, DbError> {
    Ok(invites::table
        .filter(invites::token_hash.eq(token_hash))
        .select(Invite::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// Counts one use of an invite.
pub async fn use_invite(conn: &mut Conn, invite_id: &str) -> Result<(), DbError> {
    diesel::update(invites::table.find(invite_id))
        .set(invites::uses.eq(invites::uses + 1))
        .execute(conn)
        .await?;
    Ok(())
}

/// A room's invites, newest first.
pub async fn invites_of_room(conn: &mut Conn, room_id: &str) -> Result<Vec<Invite>, DbError> {
    Ok(invites::table
        .filter(invites::room_id.eq(room_id))
        .order(invites::created_ts.desc())
        .select(Invite::as_select())
        .load(conn)
        .await?)
}

/// Revokes an invite of `room_id` (revoking twice keeps the first time); `false` if there is no
/// such invite in that room.
pub async fn revoke_invite(
    conn: &mut Conn,
    room_id: &str,
    invite_id: &str,
    now_ts: i64,
) -> Result<bool, DbError> {
    let of_room = invites::table
        .find(invite_id)
        .filter(invites::room_id.eq(room_id));
    diesel::update(of_room.filter(invites::revoked_ts.is_null()))
        .set(invites::revoked_ts.eq(now_ts))
        .execute(conn)
        .await?;
    let found: i64 = of_room.count().get_result(conn).await?;
    Ok(found > 0)
}

/// Records that `user_id` joined `room_id` with `invite_id` (once per invite).
pub async fn record_member_invite(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    invite_id: &str,
    now_ts: i64,
) -> Result<(), DbError> {
    use crate::schema::member_invites;
    diesel::insert_into(member_invites::table)
        .values((
            member_invites::room_id.eq(room_id),
            member_invites::user_id.eq(user_id),
            member_invites::invite_id.eq(invite_id),
            member_invites::joined_ts.eq(now_ts),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes every invite `user_id` joined `room_id` with that is not revoked yet; returns the ids
/// it revoked, oldest invite first.
pub async fn revoke_invites_of_member(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    now_ts: i64,
) -> Result<Vec<String>, DbError> {
    use crate::schema::member_invites;
    let joined_with = member_invites::table
        .filter(member_invites::room_id.eq(room_id))
        .filter(member_invites::user_id.eq(user_id))
        .select(member_invites::invite_id);
    let mut revoked: Vec<(String, i64)> = diesel::update(
        invites::table
            .filter(invites::room_id.eq(room_id))
            .filter(invites::revoked_ts.is_null())
            .filter(invites::invite_id.eq_any(joined_with)),
    )
    .set(invites::revoked_ts.eq(now_ts))
    .returning((invites::invite_id, invites::created_ts))
    .get_results(conn)
    .await?;
    revoked.sort_by_key(|(id, created)| (*created, id.clone()));
    Ok(revoked.into_iter().map(|(id, _)| id).collect())
}

/// Revokes every invite of `room_id` that `user_id` made and that is still valid (a kick of a
/// member who shared links); returns the revoked ids, oldest first.
pub async fn revoke_invites_made_by(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    now_ts: i64,
) -> Result<Vec<String>, DbError> {
    let mut revoked: Vec<(String, i64)> = diesel::update(
        invites::table
            .filter(invites::room_id.eq(room_id))
            .filter(invites::created_by.eq(user_id))
            .filter(invites::revoked_ts.is_null()),
    )
    .set(invites::revoked_ts.eq(now_ts))
    .returning((invites::invite_id, invites::created_ts))
    .get_results(conn)
    .await?;
    revoked.sort_by_key(|(id, created)| (*created, id.clone()));
    Ok(revoked.into_iter().map(|(id, _)| id).collect())
}

/// How many invites of `room_id` that `user_id` made are neither revoked nor expired at `now_ts`
/// (used-up ones count: they are still rows).
pub async fn count_live_invites_made_by(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    now_ts: i64,
) -> Result<i64, DbError> {
    Ok(invites::table
        .filter(invites::room_id.eq(room_id))
        .filter(invites::created_by.eq(user_id))
        .filter(invites::revoked_ts.is_null())
        .filter(
            invites::expires_ts
                .is_null()
                .or(invites::expires_ts.gt(now_ts)),
        )
        .count()
        .get_result(conn)
        .await?)
}

// ---- knocks --------------------------------------------------------------------------------

/// A user's knock at a room, locked against concurrent answers until the transaction ends.
pub async fn knock_for_update(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
) -> Result<Option<Knock>, DbError> {
    use crate::schema::knocks;
    Ok(knocks::table
        .find((room_id, user_id))
        .select(Knock::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// Stores a knock, replacing one that lapsed.
pub async fn put_knock(conn: &mut Conn, knock: &Knock) -> Result<(), DbError> {
    use crate::schema::knocks;
    diesel::insert_into(knocks::table)
        .values(knock)
        .on_conflict((knocks::room_id, knocks::user_id))
        .do_update()
        .set((
            knocks::display_name.eq(excluded(knocks::display_name)),
            knocks::invite_id.eq(excluded(knocks::invite_id)),
            knocks::state.eq(excluded(knocks::state)),
            knocks::created_ts.eq(excluded(knocks::created_ts)),
            knocks::updated_ts.eq(excluded(knocks::updated_ts)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Answers a knock; `false` if there is none.
pub async fn set_knock_state(
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
    state: &str,
    now_ts: i64,
) -> Result<bool, DbError> {
    use crate::schema::knocks;
    let n = diesel::update(knocks::table.find((room_id, user_id)))
        .set((knocks::state.eq(state), knocks::updated_ts.eq(now_ts)))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Forgets a knock (its knocker came in).
pub async fn delete_knock(conn: &mut Conn, room_id: &str, user_id: &str) -> Result<(), DbError> {
    use crate::schema::knocks;
    diesel::delete(knocks::table.find((room_id, user_id)))
        .execute(conn)
        .await?;
    Ok(())
}

/// A room's knocks in `state` changed at or after `since_ts` (those not lapsed), oldest first.
pub async fn knocks_of_room(
    conn: &mut Conn,
    room_id: &str,
    state: &str,
    since_ts: i64,
) -> Result<Vec<Knock>, DbError> {
    use crate::schema::knocks;
    Ok(knocks::table
        .filter(knocks::room_id.eq(room_id))
        .filter(knocks::state.eq(state))
        .filter(knocks::updated_ts.ge(since_ts))
        .order((knocks::created_ts.asc(), knocks::user_id.asc()))
        .select(Knock::as_select())
        .load(conn)
        .await?)
}

// ---- events --------------------------------------------------------------------------------

/// Appends events to a room's log, numbering them after the room's newest event. The room row is
/// updated first, so concurrent appenders to one room queue on its row lock and the numbers are
/// gap-free and in commit order. Returns `None` if the room does not exist.
pub async fn append_events(
    conn: &mut Conn,
    room_id: &str,
    new_events: &[NewEvent],
) -> Result<Option<Appended>, DbError> {
    let room = RoomAppend {
        room_id,
        events: new_events.iter().collect(),
        txn_ids: Vec::new(),
    };
    match append_events_batch(conn, &[room]).await? {
        Batch::Appended(mut appended) => Ok(appended.pop().flatten()),
        // Only chat carries transaction ids.
        Batch::Repeated => Ok(None),
    }
}

/// One room's part of [`append_events_batch`]: its events in order, with the transaction id
/// of each (none: `txn_ids` shorter than `events`).
#[derive(Debug)]
pub struct RoomAppend<'a> {
    pub room_id: &'a str,
    pub events: Vec<&'a NewEvent>,
    pub txn_ids: Vec<Option<&'a str>>,
}

/// Of `room_ids`, those whose rows this transaction could lock at once, in id order, and those
/// that exist but another transaction holds (a batch of another worker appending to the same
/// rooms). The rest do not exist.
pub async fn lock_rooms_at_once(
    conn: &mut Conn,
    room_ids: &[&str],
) -> Result<(Vec<String>, Vec<String>), DbError> {
    use diesel::sql_types::{Array, Text};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        room_id: String,
    }
    let locked: Vec<Row> = diesel::sql_query(
        "SELECT room_id FROM rooms WHERE room_id = ANY($1) ORDER BY room_id FOR UPDATE SKIP LOCKED",
    )
    .bind::<Array<Text>, _>(room_ids)
    .load(conn)
    .await?;
    let locked: Vec<String> = locked.into_iter().map(|r| r.room_id).collect();
    if locked.len() == room_ids.len() {
        return Ok((locked, Vec::new()));
    }
    let rest: Vec<&str> = room_ids
        .iter()
        .copied()
        .filter(|r| !locked.iter().any(|l| l == r))
        .collect();
    let held: Vec<Row> = diesel::sql_query("SELECT room_id FROM rooms WHERE room_id = ANY($1)")
        .bind::<Array<Text>, _>(&rest)
        .load(conn)
        .await?;
    Ok((locked, held.into_iter().map(|r| r.room_id).collect()))
}

/// What [`append_events_batch`] did.
#[derive(Debug)]
pub enum Batch {
    /// Per room, what was appended (`None`: the room does not exist).
    Appended(Vec<Option<Appended>>),
    /// An event's transaction id was appended before: nothing of this batch may be committed
    /// (its numbers would leave a gap); the caller rolls back and leaves the repeats out.
    Repeated,
}

// ---- the group commit's two statements -----------------------------------------------------
//
// Both take one array per column, so that their text is the same whatever the number of rooms
// and rows, and both are typed queries rather than `diesel::sql_query`: diesel then prepares
// each once per connection and runs it from its statement cache. (`sql_query` is never cached,
// so every run cost a round trip to prepare and a parse and plan; a multi-row VALUES insert is
// a new statement for every batch size, and its parse and plan grew with the batch.)

/// Adds `counts[i]` to the `last_seq` of room `room_ids[i]`, returning each room's new
/// `last_seq`. The rows are locked first, in room id order, by a materialized `FOR UPDATE`:
/// an `UPDATE … FROM` locks rows in whatever order its plan meets them, and two workers
/// appending to the same rooms at once deadlocked on it.
struct NumberRooms<'a> {
    room_ids: &'a [&'a str],
    counts: &'a [i64],
}

impl diesel::query_builder::QueryId for NumberRooms<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for NumberRooms<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for NumberRooms<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Text};
        out.push_sql("WITH v AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(self.room_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(self.counts)?;
        out.push_sql(
            ") AS v(room_id, n)), \
             l AS MATERIALIZED (SELECT rooms.room_id FROM rooms JOIN v ON rooms.room_id = v.room_id \
             ORDER BY rooms.room_id FOR UPDATE OF rooms) \
             UPDATE rooms SET last_seq = rooms.last_seq + v.n FROM v, l \
             WHERE rooms.room_id = v.room_id AND l.room_id = v.room_id \
             RETURNING rooms.room_id, rooms.last_seq",
        );
        Ok(())
    }
}

/// The rows of [`InsertEvents`], a vector per column.
struct Columns<'a> {
    room_id: Vec<&'a str>,
    seq: Vec<i64>,
    sender: Vec<&'a str>,
    device_id: Vec<&'a str>,
    origin_ts: Vec<i64>,
    content: Vec<&'a serde_json::Value>,
    txn_id: Vec<Option<&'a str>>,
}

impl Columns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            room_id: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            sender: Vec::with_capacity(n),
            device_id: Vec::with_capacity(n),
            origin_ts: Vec::with_capacity(n),
            content: Vec::with_capacity(n),
            txn_id: Vec::with_capacity(n),
        }
    }
}

/// Inserts events. A row whose transaction id is taken fails the statement (`events_txn_id`):
/// a plain insert checks each unique index once, as it inserts, where `ON CONFLICT DO NOTHING`
/// first searched both of them for every row (a quarter of Postgres's CPU in the chat benchmark).
struct InsertEvents<'a>(&'a Columns<'a>);

impl diesel::query_builder::QueryId for InsertEvents<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for InsertEvents<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text};
        let c = self.0;
        out.push_sql(
            "INSERT INTO events (room_id, seq, sender, device_id, origin_ts, content, txn_id) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&c.room_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&c.seq)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&c.sender)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&c.device_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&c.origin_ts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&c.content)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&c.txn_id)?;
        out.push_sql(")");
        Ok(())
    }
}

/// Appends events to several rooms at once, with one statement to number them all and one to
/// insert them all, whatever the number of rooms: the event writer's group commit. `batch` holds,
/// per room, the events in order; rooms are numbered in sorted order so that concurrent writers
/// lock room rows in one order and cannot deadlock. A room that does not exist maps to `None`.
pub async fn append_events_batch(
    conn: &mut Conn,
    batch: &[RoomAppend<'_>],
) -> Result<Batch, DbError> {
    use diesel::sql_types::{BigInt, Text};

    #[derive(QueryableByName)]
    struct Numbered {
        #[diesel(sql_type = Text)]
        room_id: String,
        #[diesel(sql_type = BigInt)]
        last_seq: i64,
    }

    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| batch[i].room_id);
    let room_ids: Vec<&str> = order.iter().map(|&i| batch[i].room_id).collect();
    let counts: Vec<i64> = order
        .iter()
        .map(|&i| i64::try_from(batch[i].events.len()).unwrap_or(i64::MAX))
        .collect();
    let numbered: Vec<Numbered> = NumberRooms {
        room_ids: &room_ids,
        counts: &counts,
    }
    .load(conn)
    .await?;
    // Read after the update, in a statement of its own: the update may have waited for a join
    // holding a room's row, and only a new statement sees the server that join added.
    let servers: Vec<(String, String)> = room_servers::table
        .filter(room_servers::room_id.eq_any(&room_ids))
        .select((room_servers::room_id, room_servers::server_name))
        .load(conn)
        .await?;
    let mut last: std::collections::HashMap<&str, (i64, Vec<String>)> = numbered
        .iter()
        .map(|n| {
            let of_room = servers
                .iter()
                .filter(|(r, _)| r == &n.room_id)
                .map(|(_, s)| s.clone())
                .collect();
            (n.room_id.as_str(), (n.last_seq, of_room))
        })
        .collect();
    // The arrays borrow from the input; each event is copied once, into the result.
    let rows: usize = batch.iter().map(|r| r.events.len()).sum();
    let mut cols = Columns::with_capacity(rows);
    let mut firsts = Vec::with_capacity(batch.len());
    for room in batch {
        let Some((last, servers)) = last.remove(room.room_id) else {
            firsts.push(None);
            continue;
        };
        let first = last - i64::try_from(room.events.len()).unwrap_or(i64::MAX) + 1;
        firsts.push(Some((first, servers)));
        for (i, (e, seq)) in room.events.iter().zip(first..).enumerate() {
            cols.room_id.push(room.room_id);
            cols.seq.push(seq);
            cols.sender.push(&e.sender);
            cols.device_id.push(&e.device_id);
            cols.origin_ts.push(e.origin_ts);
            cols.content.push(&e.content);
            cols.txn_id.push(room.txn_ids.get(i).copied().flatten());
        }
    }
    // A row whose transaction id is taken fails the insert, and with it the transaction, which
    // the caller rolls back anyway.
    match InsertEvents(&cols).execute(conn).await {
        Ok(_) => {}
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        )) if info.constraint_name() == Some("events_txn_id") => return Ok(Batch::Repeated),
        Err(err) => return Err(err.into()),
    }
    Ok(Batch::Appended(
        batch
            .iter()
            .zip(firsts)
            .map(|(room, first)| {
                let (first, servers) = first?;
                Some(Appended {
                    events: room
                        .events
                        .iter()
                        .zip(first..)
                        .map(|(e, seq)| Event {
                            room_id: room.room_id.to_owned(),
                            seq,
                            sender: e.sender.clone(),
                            device_id: e.device_id.clone(),
                            origin_ts: e.origin_ts,
                            content: e.content.clone(),
                        })
                        .collect(),
                    servers,
                })
            })
            .collect(),
    ))
}

/// A room's events after `since`, oldest first, at most `limit`.
pub async fn events_after(
    conn: &mut Conn,
    room_id: &str,
    since: i64,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    Ok(events::table
        .filter(events::room_id.eq(room_id))
        .filter(events::seq.gt(since))
        .order(events::seq.asc())
        .limit(limit)
        .select(Event::as_select())
        .load(conn)
        .await?)
}

/// A room's events whose content is of `content_type` (`knock`, …) and that were made at or after
/// `since_ts`, oldest first, at most `limit`.
pub async fn events_of_type_since(
    conn: &mut Conn,
    room_id: &str,
    content_type: &str,
    since_ts: i64,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Text};
    Ok(events::table
        .filter(events::room_id.eq(room_id))
        .filter(events::origin_ts.ge(since_ts))
        .filter(sql::<Bool>("content ->> 'type' = ").bind::<Text, _>(content_type.to_owned()))
        .order(events::seq.asc())
        .limit(limit)
        .select(Event::as_select())
        .load(conn)
        .await?)
}

/// Total number of persisted events, for metrics.
pub async fn count_events(conn: &mut Conn) -> Result<i64, DbError> {
    Ok(events::table.count().get_result(conn).await?)
}

// ---- federation: outbound queue ------------------------------------------------------------

/// Queues PDUs for their destinations; returns their sequence numbers, in the order given.
pub async fn enqueue_outbound(
    conn: &mut Conn,
    pdus: &[NewOutboundPdu],
) -> Result<Vec<i64>, DbError> {
    Ok(diesel::insert_into(federation_outbound::table)
        .values(pdus)
        .returning(federation_outbound::seq)
        .get_results(conn)
        .await?)
}

/// The oldest `limit` rows queued for `destination`, oldest first, leaving out those of
/// transaction `exclude`.
pub async fn outbound_head(
    conn: &mut Conn,
    destination: &str,
    exclude: Option<&str>,
    limit: i64,
) -> Result<Vec<OutboundPdu>, DbError> {
    let mut query = federation_outbound::table
        .filter(federation_outbound::destination.eq(destination))
        .order(federation_outbound::seq.asc())
        .limit(limit)
        .select(OutboundPdu::as_select())
        .into_boxed();
    if let Some(txn_id) = exclude {
        query = query.filter(
            federation_outbound::txn_id
                .is_null()
                .or(federation_outbound::txn_id.ne(txn_id)),
        );
    }
    Ok(query.load(conn).await?)
}

/// The oldest `limit` rows queued for `destination` that are in no transaction yet.
pub async fn outbound_unassigned(
    conn: &mut Conn,
    destination: &str,
    limit: i64,
) -> Result<Vec<OutboundPdu>, DbError> {
    Ok(federation_outbound::table
        .filter(federation_outbound::destination.eq(destination))
        .filter(federation_outbound::txn_id.is_null())
        .order(federation_outbound::seq.asc())
        .limit(limit)
        .select(OutboundPdu::as_select())
        .load(conn)
        .await?)
}

/// Every row of `destination` in transaction `txn_id`, oldest first.
pub async fn outbound_txn_rows(
    conn: &mut Conn,
    destination: &str,
    txn_id: &str,
) -> Result<Vec<OutboundPdu>, DbError> {
    Ok(federation_outbound::table
        .filter(federation_outbound::destination.eq(destination))
        .filter(federation_outbound::txn_id.eq(txn_id))
        .order(federation_outbound::seq.asc())
        .select(OutboundPdu::as_select())
        .load(conn)
        .await?)
}

/// Puts rows of `destination` that are in no transaction yet into transaction `txn_id`, for
/// good: retries reuse the id. Returns how many rows it took; fewer than `seqs` means another
/// sender took some first.
pub async fn assign_outbound_txn(
    conn: &mut Conn,
    destination: &str,
    seqs: &[i64],
    txn_id: &str,
) -> Result<usize, DbError> {
    Ok(diesel::update(
        federation_outbound::table
            .filter(federation_outbound::destination.eq(destination))
            .filter(federation_outbound::seq.eq_any(seqs))
            .filter(federation_outbound::txn_id.is_null()),
    )
    .set(federation_outbound::txn_id.eq(txn_id))
    .execute(conn)
    .await?)
}

/// Counts a failed attempt against the rows of a transaction.
pub async fn count_outbound_attempt(
    conn: &mut Conn,
    destination: &str,
    txn_id: &str,
) -> Result<usize, DbError> {
    Ok(diesel::update(
        federation_outbound::table
            .filter(federation_outbound::destination.eq(destination))
            .filter(federation_outbound::txn_id.eq(txn_id)),
    )
    .set(federation_outbound::attempts.eq(federation_outbound::attempts + 1))
    .execute(conn)
    .await?)
}

/// Lets the caller's transaction commit without waiting for its WAL record to reach the disk
/// (`SET LOCAL synchronous_commit = off`). Only for writes whose loss in a Postgres crash is
/// harmless: at worst the crash forgets the last few hundred milliseconds of them, and the writer
/// must be able to redo their effect without harm.
pub async fn commit_asynchronously(conn: &mut Conn) -> Result<(), DbError> {
    diesel::sql_query("SET LOCAL synchronous_commit = off")
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the rows of a transaction the destination acknowledged.
pub async fn delete_outbound_txn(
    conn: &mut Conn,
    destination: &str,
    txn_id: &str,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        federation_outbound::table
            .filter(federation_outbound::destination.eq(destination))
            .filter(federation_outbound::txn_id.eq(txn_id)),
    )
    .execute(conn)
    .await?)
}

/// Deletes everything queued for a destination (one federation is no longer allowed with).
pub async fn delete_outbound_for(conn: &mut Conn, destination: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(
        federation_outbound::table.filter(federation_outbound::destination.eq(destination)),
    )
    .execute(conn)
    .await?)
}

/// Every destination with rows queued, for the sender to resume at start-up.
pub async fn destinations_with_outbound(conn: &mut Conn) -> Result<Vec<String>, DbError> {
    Ok(federation_outbound::table
        .select(federation_outbound::destination)
        .distinct()
        .order(federation_outbound::destination.asc())
        .load(conn)
        .await?)
}

/// How many rows are queued for `destination`.
pub async fn count_outbound(conn: &mut Conn, destination: &str) -> Result<i64, DbError> {
    Ok(federation_outbound::table
        .filter(federation_outbound::destination.eq(destination))
        .count()
        .get_result(conn)
        .await?)
}

// ---- federation: destinations --------------------------------------------------------------

/// Records a delivered transaction: the destination is healthy again (and no longer given up).
pub async fn record_destination_success(
    conn: &mut Conn,
    destination: &str,
    now_ts: i64,
) -> Result<(), DbError> {
    let row = DestinationState {
        destination: destination.to_owned(),
        failures: 0,
        retry_after_ts: None,
        last_success_ts: Some(now_ts),
        last_failure_ts: None,
        failing_since_ts: None,
        given_up_ts: None,
        dropped_pdus: 0,
    };
    diesel::insert_into(federation_destinations::table)
        .values(&row)
        .on_conflict(federation_destinations::destination)
        .do_update()
        .set((
            federation_destinations::failures.eq(0),
            federation_destinations::retry_after_ts.eq(None::<i64>),
            federation_destinations::last_success_ts.eq(now_ts),
            federation_destinations::failing_since_ts.eq(None::<i64>),
            federation_destinations::given_up_ts.eq(None::<i64>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a failed transaction: `failures` in a row, no retry before `retry_after_ts`. Returns
/// when the current run of failures began (now, if this is its first).
pub async fn record_destination_failure(
    conn: &mut Conn,
    destination: &str,
    failures: i32,
    retry_after_ts: i64,
    now_ts: i64,
) -> Result<i64, DbError> {
    let row = DestinationState {
        destination: destination.to_owned(),
        failures,
        retry_after_ts: Some(retry_after_ts),
        last_success_ts: None,
        last_failure_ts: Some(now_ts),
        failing_since_ts: Some(now_ts),
        given_up_ts: None,
        dropped_pdus: 0,
    };
    let since: Option<i64> = diesel::insert_into(federation_destinations::table)
        .values(&row)
        .on_conflict(federation_destinations::destination)
        .do_update()
        .set((
            federation_destinations::failures.eq(failures),
            federation_destinations::retry_after_ts.eq(retry_after_ts),
            federation_destinations::last_failure_ts.eq(now_ts),
            federation_destinations::failing_since_ts.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
            >(
                "COALESCE(federation_destinations.failing_since_ts, EXCLUDED.failing_since_ts)",
            )),
        ))
        .returning(federation_destinations::failing_since_ts)
        .get_result(conn)
        .await?;
    Ok(since.unwrap_or(now_ts))
}

/// Gives up on a destination: drops everything queued for it and marks it, so that nothing new
/// is queued until it is back. Returns how many events were dropped.
pub async fn give_up_destination(
    conn: &mut Conn,
    destination: &str,
    now_ts: i64,
) -> Result<i64, DbError> {
    use diesel_async::AsyncConnection;
    conn.transaction(async |conn| {
        let dropped = diesel::delete(
            federation_outbound::table.filter(federation_outbound::destination.eq(destination)),
        )
        .execute(conn)
        .await?;
        let dropped = i64::try_from(dropped).unwrap_or(i64::MAX);
        diesel::update(federation_destinations::table.find(destination))
            .set((
                federation_destinations::given_up_ts.eq(now_ts),
                federation_destinations::dropped_pdus
                    .eq(federation_destinations::dropped_pdus + dropped),
            ))
            .execute(conn)
            .await?;
        Ok(dropped)
    })
    .await
}

/// Counts events not queued for a destination because it was given up.
pub async fn count_dropped_pdus(
    conn: &mut Conn,
    destination: &str,
    dropped: i64,
) -> Result<(), DbError> {
    diesel::update(federation_destinations::table.find(destination))
        .set(
            federation_destinations::dropped_pdus
                .eq(federation_destinations::dropped_pdus + dropped),
        )
        .execute(conn)
        .await?;
    Ok(())
}

/// Every destination given up on, by name.
pub async fn given_up_destinations(conn: &mut Conn) -> Result<Vec<String>, DbError> {
    Ok(federation_destinations::table
        .filter(federation_destinations::given_up_ts.is_not_null())
        .order(federation_destinations::destination.asc())
        .select(federation_destinations::destination)
        .load(conn)
        .await?)
}

/// How delivery to `destination` is going, if anything was ever sent there.
pub async fn destination_state(
    conn: &mut Conn,
    destination: &str,
) -> Result<Option<DestinationState>, DbError> {
    Ok(federation_destinations::table
        .find(destination)
        .select(DestinationState::as_select())
        .first(conn)
        .await
        .optional()?)
}

// ---- federation: received transactions -----------------------------------------------------

/// Records a received transaction unless it was recorded before; `true` if this call recorded
/// it. Inside a database transaction, a concurrent call for the same id waits on this row until
/// that transaction ends, then sees it, so two copies of one transaction are never both handled.
pub async fn claim_received_txn(conn: &mut Conn, txn: &ReceivedTxn) -> Result<bool, DbError> {
    let n = diesel::insert_into(federation_received_txns::table)
        .values(txn)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Replaces the answer recorded for a received transaction.
pub async fn set_received_txn_response(
    conn: &mut Conn,
    origin: &str,
    txn_id: &str,
    response: &serde_json::Value,
) -> Result<(), DbError> {
    diesel::update(federation_received_txns::table.find((origin, txn_id)))
        .set(federation_received_txns::response.eq(response))
        .execute(conn)
        .await?;
    Ok(())
}

/// The answer given to a transaction received before, if it was.
pub async fn received_txn_response(
    conn: &mut Conn,
    origin: &str,
    txn_id: &str,
) -> Result<Option<serde_json::Value>, DbError> {
    Ok(federation_received_txns::table
        .find((origin, txn_id))
        .select(federation_received_txns::response)
        .first(conn)
        .await
        .optional()?)
}

/// Forgets transactions received before `before_ts`; a sender retries for far less long.
pub async fn delete_received_txns_before(
    conn: &mut Conn,
    before_ts: i64,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        federation_received_txns::table.filter(federation_received_txns::received_ts.lt(before_ts)),
    )
    .execute(conn)
    .await?)
}

// ---- admin ---------------------------------------------------------------------------------

/// Every room, oldest first, for operators.
pub async fn all_rooms(conn: &mut Conn) -> Result<Vec<Room>, DbError> {
    Ok(rooms::table
        .order(rooms::created_ts.asc())
        .select(Room::as_select())
        .load(conn)
        .await?)
}

/// How many events a room has, and its newest one: activity without reading content.
pub async fn room_activity(
    conn: &mut Conn,
    room_id: &str,
) -> Result<(i64, Option<Event>), DbError> {
    let count = events::table
        .filter(events::room_id.eq(room_id))
        .count()
        .get_result(conn)
        .await?;
    let last = events::table
        .filter(events::room_id.eq(room_id))
        .order(events::seq.desc())
        .select(Event::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok((count, last))
}

/// An invite by id, whatever its room.
pub async fn invite(conn: &mut Conn, invite_id: &str) -> Result<Option<Invite>, DbError> {
    Ok(invites::table
        .find(invite_id)
        .select(Invite::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Every destination ever sent to, by name.
pub async fn all_destination_states(conn: &mut Conn) -> Result<Vec<DestinationState>, DbError> {
    Ok(federation_destinations::table
        .order(federation_destinations::destination.asc())
        .select(DestinationState::as_select())
        .load(conn)
        .await?)
}

/// How many rows are queued per destination.
pub async fn outbound_depths(conn: &mut Conn) -> Result<Vec<(String, i64)>, DbError> {
    Ok(federation_outbound::table
        .group_by(federation_outbound::destination)
        .select((federation_outbound::destination, diesel::dsl::count_star()))
        .load(conn)
        .await?)
}

/// Forgets a destination's failures so that nothing holds the next attempt back, and takes it
/// back if it was given up (its run of failures starts afresh); `false` if it was never sent to.
pub async fn clear_destination_backoff(
    conn: &mut Conn,
    destination: &str,
) -> Result<bool, DbError> {
    let n = diesel::update(federation_destinations::table.find(destination))
        .set((
            federation_destinations::failures.eq(0),
            federation_destinations::retry_after_ts.eq(None::<i64>),
            federation_destinations::failing_since_ts.eq(None::<i64>),
            federation_destinations::given_up_ts.eq(None::<i64>),
        ))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Every federation decision made by an operator.
pub async fn acl_overrides(conn: &mut Conn) -> Result<Vec<AclOverride>, DbError> {
    Ok(federation_acl_overrides::table
        .order(federation_acl_overrides::server_name.asc())
        .select(AclOverride::as_select())
        .load(conn)
        .await?)
}

/// Records an operator's decision about a server, replacing an earlier one.
pub async fn upsert_acl_override(conn: &mut Conn, row: &AclOverride) -> Result<(), DbError> {
    diesel::insert_into(federation_acl_overrides::table)
        .values(row)
        .on_conflict(federation_acl_overrides::server_name)
        .do_update()
        .set((
            federation_acl_overrides::allowed.eq(row.allowed),
            federation_acl_overrides::updated_ts.eq(row.updated_ts),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

// ---- chat transaction ids ------------------------------------------------------------------

/// A chat message's key for exactly-once delivery: its room, its sender's device and the
/// transaction id the client chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatTxnKey {
    pub room_id: String,
    pub user_id: String,
    pub device_id: String,
    pub txn_id: String,
}

/// The number and time of the event appended before for each of `keys` that was.
pub async fn events_by_txn(
    conn: &mut Conn,
    keys: &[&ChatTxnKey],
) -> Result<Vec<(ChatTxnKey, i64, i64)>, DbError> {
    use diesel::sql_types::{Array, BigInt, Text};

    #[derive(QueryableByName)]
    struct Seen {
        #[diesel(sql_type = Text)]
        room_id: String,
        #[diesel(sql_type = Text)]
        sender: String,
        #[diesel(sql_type = Text)]
        device_id: String,
        #[diesel(sql_type = Text)]
        txn_id: String,
        #[diesel(sql_type = BigInt)]
        seq: i64,
        #[diesel(sql_type = BigInt)]
        origin_ts: i64,
    }

    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&ChatTxnKey) -> &str| keys.iter().map(|k| f(k)).collect::<Vec<&str>>();
    let seen: Vec<Seen> = diesel::sql_query(
        "SELECT room_id, sender, device_id, txn_id, seq, origin_ts FROM events \
         JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
           AS k(room_id, sender, device_id, txn_id) USING (room_id, sender, device_id, txn_id)",
    )
    .bind::<Array<Text>, _>(column(|k| &k.room_id))
    .bind::<Array<Text>, _>(column(|k| &k.user_id))
    .bind::<Array<Text>, _>(column(|k| &k.device_id))
    .bind::<Array<Text>, _>(column(|k| &k.txn_id))
    .load(conn)
    .await?;
    Ok(seen
        .into_iter()
        .map(|s| {
            let key = ChatTxnKey {
                room_id: s.room_id,
                user_id: s.sender,
                device_id: s.device_id,
                txn_id: s.txn_id,
            };
            (key, s.seq, s.origin_ts)
        })
        .collect())
}
