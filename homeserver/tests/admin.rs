//! The admin API through the real `confab admin` binary against a real server and database:
//! every subcommand in human and JSON form, live effects on connected clients, and the refusals
//! (wrong token, unknown room, unreachable server, disabled API, address not allowed).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Output;

use confab_federation::ids::ServerName;
use confab_federation::policy::PolicyError;
use confab_federation::transaction::Pdu;
use serde_json::{Value, json};
use support::{PATIENCE, TestServer, WsClient};

const TOKEN: &str = "admin-token-for-tests-0123456789";

async fn admin_server() -> TestServer {
    TestServer::start_with(&[("CONFAB__ADMIN__TOKEN", TOKEN)]).await
}

/// Runs `confab admin --server <s> <args>` with the token in the environment.
async fn confab(server: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.arg("admin")
        .arg("--server")
        .arg(server)
        .args(args)
        .env("CONFAB_ADMIN_TOKEN", token)
        .kill_on_drop(true);
    tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("confab admin finished in time")
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
async fn ok(s: &TestServer, args: &[&str]) -> String {
    let out = confab(&s.admin_base(), TOKEN, args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Same with `--json`; returns the parsed answer.
async fn ok_json(s: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(s, &all).await).unwrap()
}

/// Checks a failure: status 1, nothing on stdout, exactly one line on stderr; returns it.
fn one_line_failure(out: &Output) -> String {
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("confab: "), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_invites_kick_and_close_take_effect_live() {
    let s = admin_server().await;
    let host = s.guest("Host").await;
    let guest = s.guest("Guest 3f2a").await;
    let room = s.room(&host).await;
    s.join_with_invite(&host, &guest, &room).await;
    let (mut host_ws, _) = WsClient::joined(&s, &host, &room, 0).await;
    let (mut guest_ws, _) = WsClient::joined(&s, &guest, &room, 0).await;

    // rooms list
    let text = ok(&s, &["rooms", "list"]).await;
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ROOM"), "{text}");
    assert!(header.contains("CONNECTED/JOINED"), "{text}");
    let row = lines.next().unwrap();
    assert!(row.starts_with(&room), "{text}");
    assert!(row.contains("2/2"), "{text}");
    // Columns are aligned: each header starts where its cells do.
    let col = header.find("LOCKED").unwrap();
    assert_eq!(&row[col..col + 2], "no", "{text}");
    let listed = ok_json(&s, &["rooms", "list"]).await;
    let r = &listed["rooms"][0];
    assert_eq!(r["room_id"], room.as_str());
    assert_eq!(
        (r["connected"].as_u64(), r["joined"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(r["locked"], false);
    assert_eq!(r["origin"], s.server_name().as_str());
    assert_eq!(r["host"], host.user_id.as_str());

    // invites: create (with a link of the web client's shape), list, revoke
    let created = ok_json(
        &s,
        &[
            "invites",
            "create",
            &room,
            "--expires",
            "1h",
            "--max-uses",
            "2",
        ],
    )
    .await;
    let token = created["token"].as_str().unwrap();
    let invite_id = created["invite_id"].as_str().unwrap().to_owned();
    let encoded_room = room.replace(':', "%3A");
    assert_eq!(
        created["link"],
        format!("{}/#/join/{encoded_room}/{token}", s.base)
    );
    assert_eq!(created["max_uses"], 2);
    let expires = created["expires_ts"].as_i64().unwrap() - created["created_ts"].as_i64().unwrap();
    assert_eq!(expires, 3_600_000);
    // The invite works for a newcomer.
    let newcomer = s.guest("Newcomer").await;
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &newcomer.token,
            json!({ "invite_token": token }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = ok(&s, &["invites", "create", &room]).await;
    let link = text.lines().next().unwrap();
    assert!(
        link.starts_with(&format!("{}/#/join/{encoded_room}/", s.base)),
        "{text}"
    );
    assert!(text.contains("expires: never"), "{text}");

    let text = ok(&s, &["invites", "list", &room]).await;
    assert!(text.starts_with("INVITE"), "{text}");
    assert!(text.contains(&invite_id), "{text}");
    assert!(text.contains("1/2"), "{text}");
    assert!(!text.contains(token), "tokens are never listed: {text}");
    let text = ok(&s, &["invites", "revoke", &invite_id]).await;
    assert_eq!(text, format!("invite {invite_id} revoked\n"));
    let invites = ok_json(&s, &["invites", "list", &room]).await;
    let revoked: Vec<_> = invites["invites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["invite_id"] == invite_id.as_str())
        .collect();
    assert_eq!(revoked[0]["revoked"], true);
    assert!(revoked[0].get("token").is_none());

    // rooms show: members with devices and home servers, invites, activity without content
    guest_ws.chat(&room, "secret ciphertext").await;
    let shown = ok_json(&s, &["rooms", "show", &room]).await;
    let members = shown["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let g = members
        .iter()
        .find(|m| m["user_id"] == guest.user_id.as_str())
        .unwrap();
    assert_eq!(g["devices"], json!([guest.device_id]));
    assert_eq!(g["home_server"], s.server_name().as_str());
    assert_eq!(g["display_name"], "Guest 3f2a");
    assert_eq!(shown["invites"].as_array().unwrap().len(), 3);
    assert_eq!(shown["activity"]["last_event_type"], "chat");
    assert!(shown["activity"]["events"].as_i64().unwrap() >= 4);
    assert!(!shown.to_string().contains("secret ciphertext"));
    let text = ok(&s, &["rooms", "show", &room]).await;
    assert!(text.contains("members\nUSER"), "{text}");
    assert!(text.contains(&guest.device_id), "{text}");
    assert!(text.contains("(chat)"), "{text}");
    assert!(!text.contains("secret ciphertext"), "{text}");

    // sessions list
    let sessions = ok_json(&s, &["sessions", "list"]).await;
    let all = sessions["sessions"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    let mine = all
        .iter()
        .find(|x| x["user_id"] == host.user_id.as_str())
        .unwrap();
    assert_eq!(mine["device_id"], host.device_id.as_str());
    assert_eq!(mine["display_name"], "Host");
    assert_eq!(mine["rooms"], json!([room]));
    let text = ok(&s, &["sessions", "list"]).await;
    assert!(text.starts_with("USER"), "{text}");
    assert!(text.contains("Guest 3f2a"), "{text}");

    // lock and unlock reach subscribers as events sent by the admin
    let text = ok(&s, &["rooms", "lock", &room]).await;
    assert_eq!(text, format!("room {room} locked\n"));
    let lock = guest_ws
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "lock")
        .await;
    assert_eq!(lock["content"]["locked"], true);
    assert_eq!(lock["sender"], format!("@_admin:{}", s.server_name()));
    let locked = ok_json(&s, &["rooms", "unlock", &room]).await;
    assert_eq!(locked["locked"], false);

    // kick: the guest's live session ends at once
    let text = ok(&s, &["users", "kick", &room, &guest.user_id]).await;
    // The guest came in with an invite of their own: the kick revokes it, and says which.
    let kicked_with = format!("{} kicked from {room}; invite ", guest.user_id);
    assert!(
        text.starts_with(&kicked_with) && text.ends_with(" revoked\n"),
        "{text}"
    );
    let kicked = guest_ws.wait_for(|m| m["type"] == "kicked").await;
    assert_eq!(kicked["room_id"], room.as_str());
    let event = host_ws
        .wait_for(|m| m["type"] == "event" && m["content"]["membership"] == "kicked")
        .await;
    assert_eq!(event["content"]["user_id"], guest.user_id.as_str());
    // Kicking them again: they are no longer a member.
    let out = confab(
        &s.admin_base(),
        TOKEN,
        &["users", "kick", &room, &guest.user_id],
    )
    .await;
    assert!(one_line_failure(&out).contains("not_member"));

    // close: everyone is told, the room is gone
    let closed = ok_json(&s, &["rooms", "close", &room]).await;
    assert_eq!(closed["closed"], true);
    let notice = host_ws.wait_for(|m| m["type"] == "room_closed").await;
    assert_eq!(notice["reason"], "closed");
    assert_eq!(ok(&s, &["rooms", "list"]).await, "no rooms\n");
    let out = confab(&s.admin_base(), TOKEN, &["rooms", "show", &room]).await;
    let line = one_line_failure(&out);
    assert!(
        line.contains("no such room") && line.contains("room_not_found"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_one_clear_line() {
    let s = admin_server().await;

    let out = confab(
        &s.admin_base(),
        "wrong-token-wrong-token",
        &["rooms", "list"],
    )
    .await;
    let line = one_line_failure(&out);
    assert!(line.contains("wrong admin token (unauthorized)"), "{line}");

    let out = confab(
        &s.admin_base(),
        TOKEN,
        &["rooms", "show", "!nope:127.0.0.1:1"],
    )
    .await;
    assert!(one_line_failure(&out).contains("room_not_found"));
    let out = confab(&s.admin_base(), TOKEN, &["rooms", "lock", "not-a-room"]).await;
    assert!(one_line_failure(&out).contains("bad_room_id"));
    let out = confab(
        &s.admin_base(),
        TOKEN,
        &["invites", "revoke", "nosuchinvite"],
    )
    .await;
    assert!(one_line_failure(&out).contains("no such invite"));

    // A port nothing listens on: bound, then released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let out = confab(&dead, TOKEN, &["stats"]).await;
    let line = one_line_failure(&out);
    assert!(line.contains("cannot reach the server at"), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");

    // Disabled: no token configured.
    let off = TestServer::start().await;
    let out = confab(&off.admin_base(), TOKEN, &["rooms", "list"]).await;
    let line = one_line_failure(&out);
    assert!(
        line.contains("admin API is disabled") && line.contains("admin_disabled"),
        "{line}"
    );

    // Only 10.0.0.1 may call: a loopback call is refused, even with the right token.
    let fenced = TestServer::start_with(&[
        ("CONFAB__ADMIN__TOKEN", TOKEN),
        ("CONFAB__ADMIN__ALLOWED_ADDRESSES", "10.0.0.1/32"),
    ])
    .await;
    let out = confab(&fenced.admin_base(), TOKEN, &["rooms", "list"]).await;
    assert!(one_line_failure(&out).contains("address_not_allowed"));
    // And the raw API answers with the error table's code and status.
    let res = fenced
        .http
        .get(format!("{}/_confab/admin/v1/rooms", fenced.admin_base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "address_not_allowed");
    // Without a token at all: unauthorized, before anything else is looked at.
    let res = s
        .http
        .get(format!("{}/_confab/admin/v1/stats", s.admin_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configuration_file_gives_the_server_and_token() {
    let s = admin_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("confab.toml");
    // The public address is there too: the command must pick the admin listener's.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             token = \"{TOKEN}\"\n",
            s.port,
            s.admin_port.unwrap()
        ),
    )
    .unwrap();
    let run = |config: std::path::PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["admin", "stats", "--json", "--config"])
            .arg(config)
            .env_remove("CONFAB_ADMIN_TOKEN")
            .env_remove("CONFAB__ADMIN__LISTEN")
            .output()
            .await
            .unwrap()
    };
    let out = run(config).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["rooms"], 0);

    // A configuration without an admin listener names why there is nothing to talk to.
    let off = dir.path().join("off.toml");
    std::fs::write(
        &off,
        format!("[admin]\nlisten = \"\"\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let line = one_line_failure(&run(off).await);
    assert!(line.contains("`admin.listen` is empty"), "{line}");
}

/// Sends `method path` to `base` (with the admin token); returns the status and the JSON body.
async fn raw(s: &TestServer, method: reqwest::Method, base: &str, path: &str) -> (u16, Value) {
    let res = s
        .http
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Behind the README's reverse proxy every public request comes from loopback, as these do: the
/// public listener must not serve the operator's surface to them, token or not.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_surface_is_served_on_the_admin_listener_only() {
    use reqwest::Method;
    // With a web client served at `/`, so that its file service cannot answer for these paths.
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html>").unwrap();
    let web_dir = web.path().display().to_string();
    let s = TestServer::start_with(&[
        ("CONFAB__ADMIN__TOKEN", TOKEN),
        ("CONFAB__SERVER__WEB_CLIENT_DIR", web_dir.as_str()),
    ])
    .await;
    let (public, admin) = (s.base.clone(), s.admin_base());
    assert_ne!(public, admin);

    // The public listener: 404 `not_found`, like any unknown path, whatever the method.
    for (method, path) in [
        (Method::GET, "/_confab/admin/v1/stats"),
        (Method::GET, "/_confab/admin/v1/rooms"),
        (Method::POST, "/_confab/admin/v1/keys/rotate"),
        (
            Method::POST,
            "/_confab/admin/v1/federation/peers/x.example/allow",
        ),
        (Method::GET, "/_confab/admin"),
        (Method::GET, "/metrics"),
        (Method::POST, "/metrics"),
    ] {
        let (status, body) = raw(&s, method.clone(), &public, path).await;
        assert_eq!(
            (status, &body["code"]),
            (404, &json!("not_found")),
            "{method} {path}: {body}"
        );
    }
    // Health stays public, for load balancers, and so does the client API.
    assert_eq!(raw(&s, Method::GET, &public, "/health").await.0, 200);
    assert_eq!(
        raw(&s, Method::GET, &public, "/_confab/client/v1/config")
            .await
            .0,
        200
    );

    // The admin listener: the admin API and the metrics …
    let (status, stats) = raw(&s, Method::GET, &admin, "/_confab/admin/v1/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["rooms"], 0);
    let (status, metrics) = raw(&s, Method::GET, &admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.as_str().unwrap().contains("confab_ws_connections"),
        "{metrics}"
    );
    // … and nothing else: no client API, no socket, no web client, no federation.
    for path in [
        "/_confab/client/v1/config",
        "/health",
        "/",
        "/_matrix/key/v2/server",
    ] {
        let (status, body) = raw(&s, Method::GET, &admin, path).await;
        assert_eq!(
            (status, &body["code"]),
            (404, &json!("not_found")),
            "{path}: {body}"
        );
    }
    let port = s.admin_port.unwrap();
    match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/_confab/client/v1/ws"))
        .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 404);
        }
        other => panic!("a socket on the admin listener: {other:?}"),
    }

    // The admin listener's address check covers the metrics too.
    let fenced =
        TestServer::start_with(&[("CONFAB__ADMIN__ALLOWED_ADDRESSES", "10.0.0.1/32")]).await;
    let (status, body) = raw(&fenced, Method::GET, &fenced.admin_base(), "/metrics").await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("address_not_allowed")),
        "{body}"
    );

    // Switched off: no admin listener, and still nothing on the public one.
    let off = TestServer::start_with(&[
        ("CONFAB__ADMIN__TOKEN", TOKEN),
        ("CONFAB__ADMIN__LISTEN", ""),
    ])
    .await;
    assert_eq!(off.admin_port, None);
    assert_eq!(off.state.settings.admin.listen, None);
    for path in ["/metrics", "/_confab/admin/v1/stats"] {
        let (status, body) = raw(&off, Method::GET, &off.base, path).await;
        assert_eq!(
            (status, &body["code"]),
            (404, &json!("not_found")),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_and_keys() {
    let s = admin_server().await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let (_ws, _) = WsClient::joined(&s, &host, &room, 0).await;

    let stats = ok_json(&s, &["stats"]).await;
    assert_eq!(stats["rooms"], 1);
    let figure = |name: &str| {
        stats["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["value"].as_f64().unwrap())
    };
    assert_eq!(figure("confab_ws_connections"), Some(1.0));
    assert_eq!(figure("confab_live_rooms"), Some(1.0));
    assert!(figure("confab_events_persisted_total").is_some());
    let text = ok(&s, &["stats"]).await;
    assert!(text.starts_with("FIGURE"), "{text}");
    assert!(text.contains("confab_ws_connections"), "{text}");

    let running = s.state.federation.identity.key.key_id().to_string();
    let keys = ok_json(&s, &["keys", "show"]).await;
    assert_eq!(keys["server_name"], s.server_name().as_str());
    assert_eq!(keys["current"]["key_id"], running.as_str());
    assert_eq!(
        keys["current"]["public_key"],
        s.state.federation.identity.key.verify_key().to_base64()
    );
    assert_eq!(keys["old_keys"], json!([]));
    assert!(keys["pending_key_id"].is_null());

    let text = ok(&s, &["keys", "rotate"]).await;
    assert!(text.contains("restart the server to use it"), "{text}");
    let keys = ok_json(&s, &["keys", "show"]).await;
    let pending = keys["pending_key_id"].as_str().unwrap().to_owned();
    assert_ne!(pending, running);
    let text = ok(&s, &["keys", "show"]).await;
    assert!(text.contains(&running) && text.contains(&pending), "{text}");

    // After a restart the new key is served, the old one listed as old.
    let s = s.restart().await;
    let keys = ok_json(&s, &["keys", "show"]).await;
    assert_eq!(keys["current"]["key_id"], pending.as_str());
    assert_eq!(keys["old_keys"][0]["key_id"], running.as_str());
    let (status, doc) = {
        let res = s
            .http
            .get(format!("{}/_matrix/key/v2/server", s.base))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(doc["verify_keys"].get(&pending).is_some(), "{doc}");
    assert!(doc["old_verify_keys"].get(&running).is_some(), "{doc}");
}

fn pdu() -> Pdu {
    serde_json::from_value(json!({
        "event_id": "$admin1",
        "room_id": "!room:a.example",
        "type": "confab.chat",
        "content": {"ciphertext": "c"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn federation_peers_deny_allow_and_retry() {
    // Long backoff: only an operator's retry can make the next attempt happen within the test.
    let s = TestServer::start_federating(&[
        ("CONFAB__ADMIN__TOKEN", TOKEN),
        ("CONFAB__FEDERATION__RETRY_BASE", "1000h"),
        ("CONFAB__FEDERATION__RETRY_CAP", "1000h"),
    ])
    .await;
    assert_eq!(
        ok(&s, &["federation", "peers"]).await,
        "no federation peers yet\n"
    );

    // A peer that accepts connections and drops them: every attempt fails.
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_name = ServerName::parse(&peer.local_addr().unwrap().to_string()).unwrap();
    let accept = async || {
        let (conn, _) = tokio::time::timeout(PATIENCE, peer.accept())
            .await
            .expect("the sender connects")
            .unwrap();
        drop(conn);
    };
    s.state
        .federation_sender
        .enqueue_persistent(&peer_name, pdu())
        .await
        .unwrap();
    accept().await;
    let peers = ok_json(&s, &["federation", "peers"]).await;
    let row = &peers["peers"][0];
    assert_eq!(row["server"], peer_name.as_str());
    assert_eq!(row["queued"], 1);
    assert_eq!(row["federation"], "allowed");
    // An operator's retry makes the sender try again now, despite its backoff.
    let text = ok(&s, &["federation", "retry", peer_name.as_str()]).await;
    assert_eq!(text, format!("retrying delivery to {peer_name} now\n"));
    accept().await;
    let out = confab(
        &s.admin_base(),
        TOKEN,
        &["federation", "retry", "never.example"],
    )
    .await;
    assert!(one_line_failure(&out).contains("nothing was ever sent to never.example"));

    // deny: at once for the running server, inbound and outbound …
    let other = ServerName::parse("spam.example").unwrap();
    let text = ok(&s, &["federation", "deny", "Spam.example"]).await;
    assert_eq!(text, "federation with Spam.example denied\n");
    assert!(matches!(
        s.state
            .federation
            .acl
            .check(&ServerName::parse("spam.example:8448").unwrap()),
        Err(PolicyError::Denied(_))
    ));
    assert!(
        s.state
            .federation_sender
            .enqueue_persistent(&other, pdu())
            .await
            .is_err()
    );
    let peers = ok_json(&s, &["federation", "peers"]).await;
    let spam = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["server"] == "spam.example")
        .unwrap()
        .clone();
    assert_eq!(spam["admin_override"], "deny");
    assert_eq!(spam["federation"], "denied");
    let text = ok(&s, &["federation", "peers"]).await;
    assert!(text.contains("denied (admin: deny)"), "{text}");

    // … and for good: a restarted server still denies.
    let s = s.restart().await;
    assert!(s.state.federation.acl.check(&other).is_err());
    let allowed = ok_json(&s, &["federation", "allow", "spam.example"]).await;
    assert_eq!(allowed["allowed"], true);
    assert_eq!(s.state.federation.acl.check(&other), Ok(()));
    let s = s.restart().await;
    assert_eq!(s.state.federation.acl.check(&other), Ok(()));
    let out = confab(&s.admin_base(), TOKEN, &["federation", "deny", "bad name"]).await;
    assert!(one_line_failure(&out).contains("bad_request"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kick_and_close_reach_a_federated_second_server() {
    let fed = [
        ("CONFAB__ADMIN__TOKEN", TOKEN),
        ("CONFAB__FEDERATION__RETRY_BASE", "50ms"),
        ("CONFAB__FEDERATION__RETRY_CAP", "200ms"),
    ];
    let (a, b) = tokio::join!(
        TestServer::start_federating(&fed),
        TestServer::start_federating(&fed)
    );
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let mut remote = Vec::new();
    for name in ["Alice", "Ann"] {
        let guest = a.guest(name).await;
        let invite = b.invite(&host, &room, json!({})).await;
        let (status, body) = a
            .post(
                &format!("/rooms/{room}/join"),
                &guest.token,
                json!({ "invite_token": invite["token"] }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (ws, _) = WsClient::joined(&a, &guest, &room, 0).await;
        remote.push((guest, ws));
    }
    let (ann, mut ann_ws) = remote.pop().unwrap();
    let (alice, mut alice_ws) = remote.pop().unwrap();

    // An operator of B kicks Alice: her socket on A is told at once, Ann sees why.
    ok(&b, &["users", "kick", &room, &alice.user_id]).await;
    alice_ws
        .wait_for(|m| m["type"] == "kicked" && m["room_id"] == room)
        .await;
    let member = ann_ws
        .wait_for(|m| {
            m["type"] == "event"
                && m["content"]["type"] == "member"
                && m["content"]["user_id"] == alice.user_id
                && m["content"]["membership"] == "kicked"
        })
        .await;
    assert_eq!(member["sender"], format!("@_admin:{}", b.server_name()));

    // The operator of A cannot change B's room: only its origin can.
    let out = confab(&a.admin_base(), TOKEN, &["rooms", "lock", &room]).await;
    let line = one_line_failure(&out);
    assert!(
        line.contains("forbidden") || line.contains("lives on"),
        "{line}"
    );

    // Closing on B reaches Ann on A, and A's replica is gone.
    ok(&b, &["rooms", "close", &room]).await;
    let closed = ann_ws.wait_for(|m| m["type"] == "room_closed").await;
    assert_eq!(closed["room_id"], room);
    let (status, body) = a.get(&format!("/rooms/{room}"), &ann.token).await;
    assert_eq!(status, 404, "{body}");
}
