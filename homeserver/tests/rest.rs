//! The REST API against a real server and a real database: every flow and every refusal code.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn sessions_validate_names_and_tokens() {
    let s = TestServer::start().await;
    let g = s.guest("  山田 Zoë  ").await;
    assert!(g.user_id.starts_with("@guest-"));
    assert!(g.user_id.ends_with(&format!(":127.0.0.1:{}", s.port)));
    let (status, me) = s.get("/sessions/me", &g.token).await;
    assert_eq!(status, 200);
    assert_eq!(me["display_name"], "山田 Zoë");
    assert_eq!(me["device_id"], g.device_id.as_str());

    for bad in ["", "   ", "tab\there", &"x".repeat(65)] {
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                "/sessions",
                None,
                Some(json!({"display_name": bad})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_display_name")),
            "{bad:?}"
        );
    }
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/sessions",
            None,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    let (status, body) = s.get("/sessions/me", "not-a-token").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) = s.call(reqwest::Method::GET, "/rooms", None, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    // The database holds only a hash of the token.
    let (status, _) = s.delete("/sessions/me", &g.token).await;
    assert_eq!(status, 204);
    let (status, _) = s.get("/sessions/me", &g.token).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_created_listed_and_described() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let (status, room) = s.post("/rooms", &host.token, json!({})).await;
    assert_eq!(status, 201);
    let room_id = room["room_id"].as_str().unwrap();
    assert!(room_id.starts_with('!'));
    assert!(room_id.ends_with(&format!(":127.0.0.1:{}", s.port)));
    assert_eq!(room["host"], host.user_id.as_str());
    assert_eq!(room["is_host"], true);
    assert_eq!(room["locked"], false);
    assert_eq!(room["max_participants"], 8);
    assert!(
        room["expires_ts"].is_i64(),
        "an unattended room counts down"
    );
    assert_eq!(room["members"][0]["role"], "host");

    let (status, mine) = s.get("/rooms", &host.token).await;
    assert_eq!(status, 200);
    assert_eq!(mine["rooms"][0]["room_id"], room_id);

    let stranger = s.guest("Stranger").await;
    let (status, body) = s.get(&format!("/rooms/{room_id}"), &stranger.token).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_member")));
    let (status, body) = s.get("/rooms/not-a-room", &host.token).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_room_id")));
    let missing = format!("!doesnotexist:127.0.0.1:{}", s.port);
    let (status, body) = s.get(&format!("/rooms/{missing}"), &host.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found"))
    );
    let (status, body) = s.get("/nothing/here", &host.token).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_needs_a_valid_invite() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let join = |g: &support::Guest, token: Option<&str>| {
        let body = match token {
            Some(t) => json!({"invite_token": t}),
            None => json!({}),
        };
        let path = format!("/rooms/{room}/join");
        let token = g.token.clone();
        let s = &s;
        async move { s.post(&path, &token, body).await }
    };

    let a = s.guest("A").await;
    let (status, body) = join(&a, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_required"))
    );
    let (status, body) = join(&a, Some("guessed-token")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_invalid"))
    );

    // Use count.
    let once = s.invite(&host, &room, json!({"max_uses": 1})).await;
    assert!(once["token"].as_str().unwrap().len() >= 43);
    let (status, summary) = join(&a, once["token"].as_str()).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["is_host"], false);
    // Joining again is harmless and uses nothing.
    let (status, _) = join(&a, once["token"].as_str()).await;
    assert_eq!(status, 200);
    let b = s.guest("B").await;
    let (status, body) = join(&b, once["token"].as_str()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_used_up"))
    );

    // Revocation.
    let revoked = s.invite(&host, &room, json!({})).await;
    let (status, _) = s
        .delete(
            &format!(
                "/rooms/{room}/invites/{}",
                revoked["invite_id"].as_str().unwrap()
            ),
            &host.token,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = s
        .delete(&format!("/rooms/{room}/invites/nosuch"), &host.token)
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    // An invite of another room does not open this one.
    let other_room = s.room(&host).await;
    let other = s.invite(&host, &other_room, json!({})).await;
    let (status, body) = join(&b, other["token"].as_str()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_invalid"))
    );

    // Listing shows uses and revocation, never tokens.
    let (status, list) = s.get(&format!("/rooms/{room}/invites"), &host.token).await;
    assert_eq!(status, 200);
    let invites = list["invites"].as_array().unwrap();
    assert_eq!(invites.len(), 2);
    assert!(invites.iter().all(|i| i.get("token").is_none()));
    assert!(invites.iter().any(|i| i["uses"] == 1 && i["max_uses"] == 1));
    assert!(invites.iter().any(|i| i["revoked"] == true));

    // Bad invite options.
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/invites"),
            &host.token,
            json!({"max_uses": 0}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_only_actions_are_refused_to_guests() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let guest = s.guest("Guest").await;
    s.join_with_invite(&host, &guest, &room).await;
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            format!("/rooms/{room}/invites"),
            Some(json!({})),
        ),
        (reqwest::Method::GET, format!("/rooms/{room}/invites"), None),
        (reqwest::Method::POST, format!("/rooms/{room}/lock"), None),
        (reqwest::Method::POST, format!("/rooms/{room}/unlock"), None),
        (
            reqwest::Method::POST,
            format!("/rooms/{room}/kick"),
            Some(json!({"user_id": host.user_id})),
        ),
        (reqwest::Method::DELETE, format!("/rooms/{room}"), None),
    ] {
        let (status, reply) = s.call(method, &path, Some(&guest.token), body).await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (403, Some("not_host")),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_admits_only_earlier_members() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let early = s.guest("Early").await;
    s.join_with_invite(&host, &early, &room).await;
    let invite = s.invite(&host, &room, json!({})).await;

    let (status, summary) = s
        .post(&format!("/rooms/{room}/lock"), &host.token, json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(summary["locked"], true);

    let newcomer = s.guest("Newcomer").await;
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &newcomer.token,
            json!({"invite_token": invite["token"]}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("room_locked")));

    // An earlier member leaves and comes back without an invite, although the room is locked.
    let (status, _) = s
        .post(&format!("/rooms/{room}/leave"), &early.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, body) = s.get(&format!("/rooms/{room}"), &early.token).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_member")));
    let (status, _) = s
        .post(&format!("/rooms/{room}/join"), &early.token, json!({}))
        .await;
    assert_eq!(status, 200);

    let (status, summary) = s
        .post(&format!("/rooms/{room}/unlock"), &host.token, json!({}))
        .await;
    assert_eq!((status, summary["locked"].as_bool()), (200, Some(false)));
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/join"),
            &newcomer.token,
            json!({"invite_token": invite["token"]}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn kicked_members_need_a_new_invite() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let guest = s.guest("Guest").await;
    let old = s.invite(&host, &room, json!({})).await;
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({"invite_token": old["token"]}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, kicked) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(kicked["kicked"], true);
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_member")));
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": "nobody"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_user_id")));
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": host.user_id}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    let (status, body) = s
        .post(&format!("/rooms/{room}/join"), &guest.token, json!({}))
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("kicked")));
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({"invite_token": old["token"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("kicked")),
        "the old invite predates the kick"
    );
    let (status, mine) = s.get("/rooms", &guest.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        mine["rooms"],
        json!([]),
        "a kicked user's rejoin list drops the room"
    );

    let fresh = s.invite(&host, &room, json!({})).await;
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({"invite_token": fresh["token"]}),
        )
        .await;
    assert_eq!(status, 200);
}

/// A kick keyed on the user id alone let a kicked guest back in with a new guest session and the
/// same link: the kick revokes the invite they joined with, for everyone holding it, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_kick_revokes_the_invite_the_member_joined_with() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let link = s.invite(&host, &room, json!({})).await;
    let other = s.invite(&host, &room, json!({})).await;
    let join = |g: &support::Guest, invite: &serde_json::Value| {
        let (path, token, body) = (
            format!("/rooms/{room}/join"),
            g.token.clone(),
            json!({"invite_token": invite["token"]}),
        );
        let s = &s;
        async move { s.post(&path, &token, body).await }
    };
    let (mallory, bob) = (s.guest("Mallory").await, s.guest("Bob").await);
    assert_eq!(join(&mallory, &link).await.0, 200);
    assert_eq!(join(&bob, &link).await.0, 200);

    let (status, kicked) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": mallory.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(
        kicked,
        json!({"room_id": room, "user_id": mallory.user_id, "kicked": true,
               "invite_revoked": true, "revoked_invites": [link["invite_id"]]})
    );

    // Mallory again, in a private window: a new guest, the same link.
    let again = s.guest("Mallory").await;
    let (status, body) = join(&again, &link).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_revoked")),
        "{body}"
    );
    // Everyone else holding it needs a new one too; the other link is untouched.
    let (status, invites) = s.get(&format!("/rooms/{room}/invites"), &host.token).await;
    assert_eq!(status, 200);
    let revoked = |id: &serde_json::Value| {
        invites["invites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["invite_id"] == *id)
            .unwrap()["revoked"]
            .clone()
    };
    assert_eq!(revoked(&link["invite_id"]), true);
    assert_eq!(revoked(&other["invite_id"]), false);
    let dan = s.guest("Dan").await;
    assert_eq!(join(&dan, &other).await.0, 200);
    // Bob, who came in with the same link, stays.
    let (status, _) = s.get(&format!("/rooms/{room}"), &bob.token).await;
    assert_eq!(status, 200);

    // A member whose link the host revoked already: the kick revokes nothing more, and says so.
    let (status, _) = s
        .delete(
            &format!(
                "/rooms/{room}/invites/{}",
                other["invite_id"].as_str().unwrap()
            ),
            &host.token,
        )
        .await;
    assert_eq!(status, 204);
    let (status, kicked) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": dan.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(
        (&kicked["invite_revoked"], &kicked["revoked_invites"]),
        (&json!(false), &json!([]))
    );
}

/// A member who had left could come back to a locked room forever, as a kick acted on joined
/// members only: now they can be kicked too, and stay out.
#[tokio::test(flavor = "multi_thread")]
async fn kicking_a_member_who_left_keeps_them_out_of_a_locked_room() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let guest = s.guest("Guest").await;
    let invite = s.invite(&host, &room, json!({})).await;
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({"invite_token": invite["token"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (mut host_ws, _) = support::WsClient::joined(&s, &host, &room, 0).await;
    let (status, _) = s
        .post(&format!("/rooms/{room}/leave"), &guest.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .post(&format!("/rooms/{room}/lock"), &host.token, json!({}))
        .await;
    assert_eq!(status, 200);

    let (status, kicked) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(kicked["revoked_invites"], json!([invite["invite_id"]]));
    // The log shows it like any kick, to everyone in the room.
    let event = host_ws
        .wait_for(|m| m["type"] == "event" && m["content"]["membership"] == "kicked")
        .await;
    assert_eq!(event["content"]["user_id"], guest.user_id.as_str());

    // Out of the locked room (no longer a returning member), and still out once it is unlocked.
    let rejoin = |body: serde_json::Value| {
        let (path, token, s) = (format!("/rooms/{room}/join"), guest.token.clone(), &s);
        async move {
            let (status, reply) = s.post(&path, &token, body).await;
            (status, reply["code"].as_str().map(str::to_owned))
        }
    };
    let with_old_link = json!({"invite_token": invite["token"]});
    for body in [json!({}), with_old_link.clone()] {
        assert_eq!(rejoin(body).await, (403, Some("room_locked".to_owned())));
    }
    let (status, _) = s
        .post(&format!("/rooms/{room}/unlock"), &host.token, json!({}))
        .await;
    assert_eq!(status, 200);
    for body in [json!({}), with_old_link] {
        assert_eq!(rejoin(body).await, (403, Some("kicked".to_owned())));
    }
    let (status, summary) = s.get(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 200);
    let member = summary["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == guest.user_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(member["membership"], "kicked");
    // Kicked once is enough: a second kick finds no member.
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_member")));
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_deletes_everything() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let invite = s.invite(&host, &room, json!({})).await;
    let (status, _) = s.delete(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 204);
    let (status, body) = s.get(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found"))
    );
    let guest = s.guest("Guest").await;
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({"invite_token": invite["token"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found"))
    );
    let (status, mine) = s.get("/rooms", &host.token).await;
    assert_eq!(
        (status, mine["rooms"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_per_user_are_limited() {
    let s = TestServer::start_with(&[("CONFAB__LIMITS__MAX_ROOMS_PER_USER", "2")]).await;
    let host = s.guest("Host").await;
    s.room(&host).await;
    s.room(&host).await;
    let (status, body) = s.post("/rooms", &host.token, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_rooms"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_config() {
    let s = TestServer::start_with(&[
        ("CONFAB__ICE__STUN_URLS", "stun:127.0.0.1:3478"),
        ("CONFAB__ICE__TURN_URLS", "turn:127.0.0.1:3478"),
        ("CONFAB__ICE__TURN_SECRET", "s3cret"),
    ])
    .await;
    let health: serde_json::Value = s
        .http
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let (status, config) = s.call(reqwest::Method::GET, "/config", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(config["max_participants"], 8);
    // STUN for anyone; TURN credentials never here, not even with a session (see tests/turn.rs).
    assert_eq!(
        config["ice_servers"],
        json!([{ "urls": ["stun:127.0.0.1:3478"] }])
    );
    let g = s.guest("M").await;
    let (_, config) = s.get("/config", &g.token).await;
    assert_eq!(
        config["ice_servers"],
        json!([{ "urls": ["stun:127.0.0.1:3478"] }])
    );

    let _ = s.get("/rooms/bad", &g.token).await;
    let text = s.metrics().await;
    assert!(
        text.contains("confab_http_request_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/_confab/client/v1/rooms/{room_id}\""),
        "{text}"
    );
    assert!(
        text.contains("confab_errors_total{code=\"bad_room_id\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_make_invite_links_only_while_the_host_lets_them() {
    let s = TestServer::start().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let guest = s.guest("Guest").await;
    s.join_with_invite(&host, &guest, &room).await;
    let invites = format!("/rooms/{room}/invites");
    let settings = format!("/rooms/{room}/settings");

    // Off by default: the summary says so, and a guest's link is refused.
    let (_, summary) = s.get(&format!("/rooms/{room}"), &guest.token).await;
    assert_eq!(
        (&summary["guests_may_share"], &summary["can_share"]),
        (&json!(false), &json!(false))
    );
    let (status, body) = s.post(&invites, &guest.token, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_host")));
    // Only the host changes settings; an unknown setting is a bad request.
    let (status, body) = s
        .post(&settings, &guest.token, json!({"guests_may_share": true}))
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_host")));
    let (status, body) = s
        .post(&settings, &host.token, json!({"lobbyy": true}))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    // The host turns it on; everyone subscribed sees the `settings` event.
    let mut watcher = support::WsClient::authed(&s, &guest).await;
    let ack = watcher
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    let since = ack["result"]["latest_seq"].as_i64().unwrap();
    let (status, summary) = s
        .post(&settings, &host.token, json!({"guests_may_share": true}))
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["guests_may_share"], true);
    let event = watcher
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "settings")
        .await;
    assert_eq!(event["seq"].as_i64().unwrap(), since + 1);
    assert_eq!(
        event["content"],
        json!({"type": "settings", "guests_may_share": true, "lobby": false,
               "changed": ["guests_may_share"]})
    );
    assert_eq!(event["sender"], host.user_id.as_str());

    // Now the guest's link works, and the host sees who made it.
    let (_, summary) = s.get(&format!("/rooms/{room}"), &guest.token).await;
    assert_eq!(summary["can_share"], true);
    let (status, shared) = s.post(&invites, &guest.token, json!({})).await;
    assert_eq!(status, 201, "{shared}");
    let friend = s.guest("Friend").await;
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &friend.token,
            json!({"invite_token": shared["token"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = s.get(&invites, &host.token).await;
    let made = list["invites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["invite_id"] == shared["invite_id"])
        .unwrap()
        .clone();
    assert_eq!(made["created_by"], guest.user_id.as_str());
    // Guests still cannot list or revoke invites.
    let (status, _) = s.get(&invites, &guest.token).await;
    assert_eq!(status, 403);
    // Someone who is not a member gets nothing.
    let outsider = s.guest("Outsider").await;
    let (status, body) = s.post(&invites, &outsider.token, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_member")));

    // A guest has a bounded number of live links.
    for _ in 1..10 {
        let (status, body) = s.post(&invites, &guest.token, json!({})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = s.post(&invites, &guest.token, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_invites")),
        "{body}"
    );

    // Turned off again, the guest's new links are refused (the old ones stay until revoked).
    let (status, _) = s
        .post(&settings, &host.token, json!({"guests_may_share": false}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.post(&invites, &guest.token, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_host")));

    // A kick of the guest revokes the links they made, with the one they joined with.
    let (status, kicked) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    let revoked = kicked["revoked_invites"].as_array().unwrap();
    assert_eq!(revoked.len(), 11, "{kicked}");
    assert!(revoked.contains(&shared["invite_id"]));
    let late = s.guest("Late").await;
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &late.token,
            json!({"invite_token": shared["token"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_revoked"))
    );
}

/// Joins `guest` with a fresh invite from `host` and returns the answer (no assertion).
async fn try_join(
    s: &TestServer,
    guest: &support::Guest,
    room: &str,
    token: &serde_json::Value,
) -> (u16, serde_json::Value) {
    s.post(
        &format!("/rooms/{room}/join"),
        &guest.token,
        json!({ "invite_token": token }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn cohosts_share_the_hosts_authority_but_only_the_host_names_them() {
    let s = TestServer::start().await;
    let (room, people) = s.room_with(3).await;
    let (host, ann, bob, cat) = (&people[0], &people[1], &people[2], &people[3]);
    let role = format!("/rooms/{room}/role");
    let code = |r: &(u16, serde_json::Value)| (r.0, r.1["code"].as_str().map(str::to_owned));
    let refused = |c: &str| (403, Some(c.to_owned()));

    // A guest can neither name co-hosts nor act as a host.
    let r = s
        .post(
            &role,
            &ann.token,
            json!({"user_id": bob.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(code(&r), refused("not_host"));
    let mut watcher = support::WsClient::authed(&s, cat).await;
    watcher
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;

    // The host names Ann co-host: everyone sees the `role` event, and the summary says it.
    let (status, body) = s
        .post(
            &role,
            &host.token,
            json!({"user_id": ann.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"room_id": room, "user_id": ann.user_id, "role": "cohost"})
    );
    let event = watcher
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "role")
        .await;
    assert_eq!(
        event["content"],
        json!({"type": "role", "user_id": ann.user_id, "role": "cohost", "reason": "promoted"})
    );
    let (_, summary) = s.get(&format!("/rooms/{room}"), &ann.token).await;
    assert_eq!(
        (&summary["is_host"], &summary["role"]),
        (&json!(true), &json!("cohost"))
    );
    assert_eq!(summary["host"], host.user_id.as_str());
    let member_role = |summary: &serde_json::Value, user: &str| {
        summary["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user)
            .unwrap()["role"]
            .clone()
    };
    assert_eq!(member_role(&summary, &ann.user_id), "cohost");
    assert_eq!(member_role(&summary, &host.user_id), "host");

    // A co-host locks, invites, lists and revokes invites, changes settings and kicks a guest…
    let (status, _) = s
        .post(&format!("/rooms/{room}/lock"), &ann.token, json!({}))
        .await;
    assert_eq!(status, 200);
    let invite = s.invite(ann, &room, json!({})).await;
    let (status, _) = s.get(&format!("/rooms/{room}/invites"), &ann.token).await;
    assert_eq!(status, 200);
    let (status, _) = s
        .delete(
            &format!(
                "/rooms/{room}/invites/{}",
                invite["invite_id"].as_str().unwrap()
            ),
            &ann.token,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/settings"),
            &ann.token,
            json!({"lobby": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, kicked) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &ann.token,
            json!({"user_id": cat.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    // …but neither names co-hosts, nor removes the host or another co-host, nor closes the room.
    let r = s
        .post(
            &role,
            &ann.token,
            json!({"user_id": bob.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(code(&r), refused("not_host"));
    let r = s
        .post(
            &format!("/rooms/{room}/kick"),
            &ann.token,
            json!({"user_id": host.user_id}),
        )
        .await;
    assert_eq!(code(&r), refused("not_host"));
    let (status, _) = s
        .post(
            &role,
            &host.token,
            json!({"user_id": bob.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(status, 200);
    let r = s
        .post(
            &format!("/rooms/{room}/kick"),
            &ann.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(code(&r), refused("not_host"));
    let r = s.delete(&format!("/rooms/{room}"), &ann.token).await;
    assert_eq!(code(&r), refused("not_host"));

    // Bad role changes.
    let r = s
        .post(
            &role,
            &host.token,
            json!({"user_id": cat.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(code(&r), refused("not_member"));
    let r = s
        .post(
            &role,
            &host.token,
            json!({"user_id": bob.user_id, "role": "host"}),
        )
        .await;
    assert_eq!(r.0, 400);
    let r = s
        .post(
            &role,
            &host.token,
            json!({"user_id": host.user_id, "role": "guest"}),
        )
        .await;
    assert_eq!(r.0, 400);

    // Made a guest again, Ann has no authority left.
    let (status, _) = s
        .post(
            &role,
            &host.token,
            json!({"user_id": ann.user_id, "role": "guest"}),
        )
        .await;
    assert_eq!(status, 200);
    let r = s
        .post(&format!("/rooms/{room}/unlock"), &ann.token, json!({}))
        .await;
    assert_eq!(code(&r), refused("not_host"));
    // The host may remove a co-host; that ends the role.
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_room_gets_a_new_host_when_its_host_leaves_for_good() {
    let s = TestServer::start().await;
    // The longest-present member takes over when no co-host is left…
    let (room, people) = s.room_with(2).await;
    let (host, ann, bob) = (&people[0], &people[1], &people[2]);
    // Both are here (someone present is preferred to someone away); Ann came first.
    let mut bob_ws = support::WsClient::authed(&s, bob).await;
    bob_ws
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    let mut watcher = support::WsClient::authed(&s, ann).await;
    watcher
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    let (status, _) = s
        .post(&format!("/rooms/{room}/leave"), &host.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let event = watcher
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "role")
        .await;
    assert_eq!(
        event["content"],
        json!({"type": "role", "user_id": ann.user_id, "role": "host", "reason": "succession",
               "previous": host.user_id})
    );
    let (_, summary) = s.get(&format!("/rooms/{room}"), &ann.token).await;
    assert_eq!(
        (&summary["host"], &summary["role"], &summary["is_host"]),
        (&json!(ann.user_id), &json!("host"), &json!(true))
    );
    let (status, _) = s
        .post(&format!("/rooms/{room}/lock"), &ann.token, json!({}))
        .await;
    assert_eq!(status, 200);
    // The old host may come back (a returning member), as a guest.
    let (status, body) = s
        .post(&format!("/rooms/{room}/join"), &host.token, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "guest");
    let (status, body) = s
        .post(&format!("/rooms/{room}/unlock"), &host.token, json!({}))
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_host")));

    // …and a co-host before anyone who came earlier.
    let (room, people) = s.room_with(2).await;
    let (host, bob) = (&people[0], &people[2]);
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/role"),
            &host.token,
            json!({"user_id": bob.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .post(&format!("/rooms/{room}/leave"), &host.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let (_, summary) = s.get(&format!("/rooms/{room}"), &bob.token).await;
    assert_eq!(summary["host"], bob.user_id.as_str());

    // A host alone leaves the room to nobody: it stays theirs.
    let host = s.guest("Alone").await;
    let room = s.room(&host).await;
    let (status, _) = s
        .post(&format!("/rooms/{room}/leave"), &host.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, body) = s
        .post(&format!("/rooms/{room}/join"), &host.token, json!({}))
        .await;
    assert_eq!((status, &body["role"]), (200, &json!("host")), "{body}");
}

/// Waits until the room's owner sees `user` connected (`true`) or not.
async fn until_connected(s: &TestServer, room: &str, user: &str, connected: bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.state.engine.is_connected(room, user) != connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {user}"
        );
        // Polling a condition with a deadline: the socket's end reaches the owner on its own task.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_host_is_replaced_after_the_grace_and_a_reconnect_hands_nothing_over() {
    let s = TestServer::start().await;
    let (room, people) = s.room_with(1).await;
    let (host, ann) = (&people[0], &people[1]);
    let grace = i64::try_from(s.state.settings.rooms.host_absence_grace.as_millis()).unwrap();
    let subscribe = json!({"type": "subscribe", "room_id": room});
    let mut ann_ws = support::WsClient::authed(&s, ann).await;
    ann_ws.request(subscribe.clone()).await;
    let mut host_ws = support::WsClient::authed(&s, host).await;
    host_ws.request(subscribe.clone()).await;
    until_connected(&s, &room, &host.user_id, true).await;

    // The rounds of the sweeper are driven here, at chosen times; its own rounds run on the
    // default grace of minutes and do not come into this test.
    let mut absent = confab::rooms::AbsentHosts::default();
    let t0 = confab::time::now_ms();
    // A reload: the host's socket goes, one round sees them away, they are back before the next.
    host_ws.close().await;
    until_connected(&s, &room, &host.user_id, false).await;
    assert_eq!(
        s.state
            .rooms
            .sweep_absent_hosts(&mut absent, t0)
            .await
            .unwrap(),
        0
    );
    let mut host_ws = support::WsClient::authed(&s, host).await;
    host_ws.request(subscribe.clone()).await;
    until_connected(&s, &room, &host.user_id, true).await;
    assert_eq!(
        s.state
            .rooms
            .sweep_absent_hosts(&mut absent, t0 + grace)
            .await
            .unwrap(),
        0
    );
    // Away again, the count starts anew: a round just short of the grace hands nothing over.
    host_ws.close().await;
    until_connected(&s, &room, &host.user_id, false).await;
    let t1 = t0 + grace + 1;
    assert_eq!(
        s.state
            .rooms
            .sweep_absent_hosts(&mut absent, t1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.state
            .rooms
            .sweep_absent_hosts(&mut absent, t1 + grace - 1)
            .await
            .unwrap(),
        0
    );
    let (_, summary) = s.get(&format!("/rooms/{room}"), &ann.token).await;
    assert_eq!(summary["host"], host.user_id.as_str());

    // Gone for the whole grace: Ann, who is here, takes over, and is told.
    assert_eq!(
        s.state
            .rooms
            .sweep_absent_hosts(&mut absent, t1 + grace)
            .await
            .unwrap(),
        1
    );
    let event = ann_ws
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "role")
        .await;
    assert_eq!(event["content"]["user_id"], ann.user_id.as_str());
    assert_eq!(event["content"]["reason"], "succession");
    let (_, summary) = s.get(&format!("/rooms/{room}"), &ann.token).await;
    assert_eq!(summary["host"], ann.user_id.as_str());
    // Another round changes nothing: Ann is here.
    assert_eq!(
        s.state
            .rooms
            .sweep_absent_hosts(&mut absent, t1 + 3 * grace)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_room_with_a_lobby_lets_knockers_in_or_turns_them_away() {
    let s = TestServer::start().await;
    let (room, people) = s.room_with(1).await;
    let (host, guest) = (&people[0], &people[1]);
    let link = s.invite(host, &room, json!({})).await;
    let (status, _) = s
        .post(&format!("/rooms/{room}/lock"), &host.token, json!({}))
        .await;
    assert_eq!(status, 200);
    let code = |r: &(u16, serde_json::Value)| (r.0, r.1["code"].as_str().map(str::to_owned));
    let c = |status: u16, code: &str| (status, Some(code.to_owned()));

    // No lobby: refused as before.
    let nina = s.guest("Nina").await;
    assert_eq!(
        code(&try_join(&s, &nina, &room, &link["token"]).await),
        c(403, "room_locked")
    );

    // With the lobby, a valid link knocks: the hosts see it live and in the summary.
    let (status, summary) = s
        .post(
            &format!("/rooms/{room}/settings"),
            &host.token,
            json!({"lobby": true}),
        )
        .await;
    assert_eq!((status, &summary["lobby"]), (200, &json!(true)));
    let mut host_ws = support::WsClient::authed(&s, host).await;
    host_ws
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    assert_eq!(
        code(&try_join(&s, &nina, &room, &link["token"]).await),
        c(403, "knocking")
    );
    let event = host_ws
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "knock")
        .await;
    assert_eq!(event["content"]["user_id"], nina.user_id.as_str());
    assert_eq!(event["content"]["state"], "pending");
    assert_eq!(event["content"]["display_name"], "Nina");
    // Asking again while waiting is the same knock.
    assert_eq!(
        code(&try_join(&s, &nina, &room, &link["token"]).await),
        c(403, "knocking")
    );
    let (_, summary) = s.get(&format!("/rooms/{room}"), &host.token).await;
    let knocks = summary["knocks"].as_array().unwrap();
    assert_eq!(knocks.len(), 1, "{summary}");
    assert_eq!(knocks[0]["user_id"], nina.user_id.as_str());
    let (_, summary) = s.get(&format!("/rooms/{room}"), &guest.token).await;
    assert_eq!(summary["knocks"], json!([]));
    // A bad link does not knock; a guest does not answer.
    let eve = s.guest("Eve").await;
    assert_eq!(
        code(&try_join(&s, &eve, &room, &json!("nope")).await),
        c(403, "invite_invalid")
    );
    let knocks = format!("/rooms/{room}/knocks");
    let r = s
        .post(
            &knocks,
            &guest.token,
            json!({"user_id": nina.user_id, "admit": true}),
        )
        .await;
    assert_eq!(code(&r), c(403, "not_host"));
    let r = s
        .post(
            &knocks,
            &host.token,
            json!({"user_id": eve.user_id, "admit": true}),
        )
        .await;
    assert_eq!(code(&r), c(404, "not_found"));

    // Admitted: Nina comes in despite the lock, with her invite counted.
    let (status, body) = s
        .post(
            &knocks,
            &host.token,
            json!({"user_id": nina.user_id, "admit": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "admitted");
    let (status, body) = try_join(&s, &nina, &room, &link["token"]).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = s.get(&format!("/rooms/{room}/invites"), &host.token).await;
    let used = list["invites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["invite_id"] == link["invite_id"])
        .unwrap()["uses"]
        .clone();
    assert_eq!(used, 1);

    // Refused: Rob is turned away, and stays so.
    let rob = s.guest("Rob").await;
    assert_eq!(
        code(&try_join(&s, &rob, &room, &link["token"]).await),
        c(403, "knocking")
    );
    let (status, _) = s
        .post(
            &knocks,
            &host.token,
            json!({"user_id": rob.user_id, "admit": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        code(&try_join(&s, &rob, &room, &link["token"]).await),
        c(403, "knock_refused")
    );
    assert_eq!(
        code(&try_join(&s, &rob, &room, &link["token"]).await),
        c(403, "knock_refused")
    );

    // The lobby is bounded.
    for i in 0..confab::rooms::MAX_KNOCKS {
        let k = s.guest(&format!("Knocker {i}")).await;
        assert_eq!(
            code(&try_join(&s, &k, &room, &link["token"]).await),
            c(403, "knocking")
        );
    }
    let late = s.guest("Late").await;
    assert_eq!(
        code(&try_join(&s, &late, &room, &link["token"]).await),
        c(429, "too_many_knocks")
    );
}
