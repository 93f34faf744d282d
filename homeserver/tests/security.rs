//! Attacks tried for real against servers on loopback: guessing invites and rooms, flooding
//! guest sessions, pretending to be another address through `X-Forwarded-For`, framing the web
//! client, and reading secrets out of the logs.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use support::{TestServer, WsClient};

/// An HTTP client whose connections come from `source`, another loopback address.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Sends a join as `token`'s guest; returns status, headers and body.
async fn join(
    http: &reqwest::Client,
    s: &TestServer,
    token: &str,
    room: &str,
    invite: &str,
    forwarded_for: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let mut req = http
        .post(format!("{}/_confab/client/v1/rooms/{room}/join", s.base))
        .bearer_auth(token)
        .json(&json!({ "invite_token": invite }));
    if let Some(address) = forwarded_for {
        req = req.header("X-Forwarded-For", address);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap())
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

/// Guesses sent all at once, over connections of their own: each takes from the budget before
/// it is tried, so no more than the budget get an answer about the guess, however many are in
/// flight together; the rest are `rate_limited`.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_get_no_more_answers_than_the_budget() {
    const BUDGET: usize = 3;
    const GUESSES: usize = 40;
    let s = TestServer::start_with(&[("CONFAB__LIMITS__JOIN_FAILURES_PER_MINUTE", "3")]).await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let guesser = s.guest("Guesser").await;
    let from = client_from("127.0.0.4");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(GUESSES));
    let guesses = (0..GUESSES).map(|n| {
        let (from, start, token, room) = (
            from.clone(),
            start.clone(),
            guesser.token.clone(),
            room.clone(),
        );
        let base = s.base.clone();
        tokio::spawn(async move {
            start.wait().await;
            let res = from
                .post(format!("{base}/_confab/client/v1/rooms/{room}/join"))
                .bearer_auth(&token)
                .json(&json!({ "invite_token": format!("guess-{n}") }))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, code(&body).to_owned())
        })
    });
    let mut answered = 0;
    for guess in futures_util::future::join_all(guesses).await {
        match guess.unwrap() {
            (403, code) if code == "invite_invalid" => answered += 1,
            (429, code) if code == "rate_limited" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(answered, BUDGET, "guesses answered as such");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_joins_are_limited_per_client_address() {
    let s = TestServer::start_with(&[("CONFAB__LIMITS__JOIN_FAILURES_PER_MINUTE", "3")]).await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let valid = s.invite(&host, &room, json!({}));
    let valid = valid.await["token"].as_str().unwrap().to_owned();
    let guesser = s.guest("Guesser").await;
    let local = reqwest::Client::new();

    // Three wrong guesses are answered as such; then the address is refused outright, even
    // with a token that would be right, so guessing gets no further answers.
    for n in 0..3 {
        let (status, _, body) = join(
            &local,
            &s,
            &guesser.token,
            &room,
            &format!("guess-{n}"),
            None,
        )
        .await;
        assert_eq!((status, code(&body)), (403, "invite_invalid"), "{body}");
    }
    // Unknown rooms count too: they are how room ids would be enumerated.
    let (status, headers, body) = join(
        &local,
        &s,
        &guesser.token,
        "!nosuchroom:127.0.0.1",
        &valid,
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    let retry = body["retry_after_ms"].as_u64().unwrap();
    assert!((1..=20_000).contains(&retry), "{body}");
    assert!(headers.contains_key("retry-after"));
    let (status, _, body) = join(&local, &s, &guesser.token, &room, &valid, None).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");

    // Another address is not held back by this one.
    let other = client_from("127.0.0.2");
    let (status, _, body) = join(&other, &s, &guesser.token, &room, &valid, None).await;
    assert_eq!(status, 200, "{body}");

    // Loopback is a trusted proxy by default: what it forwards for is a client of its own.
    let late = s.guest("Late").await;
    let (status, _, body) = join(
        &local,
        &s,
        &late.token,
        &room,
        &valid,
        Some("198.51.100.7, 203.0.113.9"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // An untrusted peer cannot pick another address with the header: 127.0.0.3 uses its own
    // budget, header or not.
    let spoofer_http = client_from("127.0.0.3");
    let spoofer = s.guest("Spoofer").await;
    for n in 0..3 {
        let forged = format!("192.0.2.{n}");
        let (status, _, body) = join(
            &spoofer_http,
            &s,
            &spoofer.token,
            &room,
            "wrong",
            Some(&forged),
        )
        .await;
        assert_eq!((status, code(&body)), (403, "invite_invalid"), "{body}");
    }
    let (status, _, body) = join(
        &spoofer_http,
        &s,
        &spoofer.token,
        &room,
        &valid,
        Some("192.0.2.200"),
    )
    .await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    // Refusals are counted where operators look.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("confab_errors_total{code=\"rate_limited\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_federated_server_shares_one_budget_of_refused_joins() {
    // B allows each address 1 refusal a minute, so each federated server 10.
    let b =
        TestServer::start_federating(&[("CONFAB__LIMITS__JOIN_FAILURES_PER_MINUTE", "1")]).await;
    let a = TestServer::start_federating(&[]).await;
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let valid = b.invite(&host, &room, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Ten users of A guess (A's own per-address budget of 10 is spent along with it).
    for n in 0..10 {
        let guesser = a.guest(&format!("Guesser {n}")).await;
        let (status, body) = a
            .post(
                &format!("/rooms/{room}/join"),
                &guesser.token,
                json!({"invite_token": format!("guess-{n}")}),
            )
            .await;
        assert_eq!((status, code(&body)), (403, "invite_invalid"), "{body}");
    }
    // A's eleventh user, from an address A has not limited, is refused by B for A as a whole.
    let eleventh = a.guest("Eleventh").await;
    let (status, _, body) = join(
        &client_from("127.0.0.2"),
        &a,
        &eleventh.token,
        &room,
        &valid,
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    // B's own users are not affected by A's budget.
    let neighbour = b.guest("Neighbour").await;
    let (status, body) = b
        .post(
            &format!("/rooms/{room}/join"),
            &neighbour.token,
            json!({ "invite_token": valid }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_sessions_are_limited_per_client_address() {
    let s = TestServer::start_with(&[("CONFAB__LIMITS__SESSIONS_PER_MINUTE", "5")]).await;
    let create = async |http: &reqwest::Client| {
        let res = http
            .post(format!("{}/_confab/client/v1/sessions", s.base))
            .json(&json!({"display_name": "Flood"}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap())
    };
    let local = reqwest::Client::new();
    for _ in 0..5 {
        let (status, body) = create(&local).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = create(&local).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    // At five a minute the next one is at most 12 s away.
    let retry = body["retry_after_ms"].as_u64().unwrap();
    assert!((1..=12_000).contains(&retry), "{body}");
    let (status, body) = create(&client_from("127.0.0.2")).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_security_headers() {
    let s = TestServer::start().await;
    for path in [
        "/health",
        "/_confab/client/v1/config",
        "/_confab/client/v1/nosuch",
    ] {
        let res = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path} has no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval';",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        // Scripts come from this origin only: nothing inline, nothing evaluated from strings.
        let scripts = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(!scripts.contains("unsafe-inline") && !scripts.contains("'unsafe-eval'"));
        // Sockets only to this server, not to any ws: host (a way out for stolen data).
        let connect = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("connect-src"))
            .unwrap();
        assert_eq!(
            connect,
            format!("connect-src 'self' ws://127.0.0.1:{}", s.port)
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("referrer-policy"), "no-referrer");
    }
}

/// Everything logged in this test process, at debug level and above, from every crate.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .init();
        log
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_payloads_never_reach_the_log() {
    let log = captured_log();
    let admin_token = "admin-token-that-must-stay-secret";
    let s = TestServer::start_with(&[("CONFAB__ADMIN__TOKEN", admin_token)]).await;
    let host = s.guest("Host").await;
    let guest = s.guest("Guest").await;
    let room = s.room(&host).await;
    let invite = s.invite(&host, &room, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({ "invite_token": invite }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (mut a, _) = WsClient::joined(&s, &host, &room, 0).await;
    let (mut b, _) = WsClient::joined(&s, &guest, &room, 0).await;
    let chat = "ciphertext-that-must-not-be-logged";
    a.chat(&room, chat).await;
    let got = b
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "chat")
        .await;
    assert_eq!(got["content"]["ciphertext"], chat);
    let signal = "signaling-payload-that-must-not-be-logged";
    let reply = a
        .request(json!({"type": "signal", "room_id": room, "to": {"user_id": guest.user_id, "device_id": guest.device_id}, "payload": signal}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    b.wait_for(|m| m["type"] == "signal").await;
    // Refused credentials are logged as refusals, not as what was presented.
    let forged = "forged-access-token-that-must-not-be-logged";
    let mut c = WsClient::connect(&s).await;
    let reply = c.request(json!({"type": "auth", "token": forged})).await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    let (status, _) = s.get("/sessions/me", forged).await;
    assert_eq!(status, 401);
    // The admin API's audit log names calls, never the token or the invites it hands out.
    let admin = |path: &str| {
        s.http
            .post(format!("{}/_confab/admin/v1{path}", s.admin_base()))
            .bearer_auth(admin_token)
            .json(&json!({}))
            .send()
    };
    let res = admin(&format!("/rooms/{room}/invites")).await.unwrap();
    assert_eq!(res.status(), 201);
    let admin_invite: Value = res.json().await.unwrap();
    let admin_invite = admin_invite["token"].as_str().unwrap().to_owned();
    let wrong = s
        .http
        .get(format!("{}/_confab/admin/v1/rooms", s.admin_base()))
        .bearer_auth("wrong-admin-token-that-must-not-be-logged")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    // The capture is live: the audit lines of both admin calls are there.
    assert!(
        text.matches("admin call").count() >= 2,
        "nothing captured:\n{text}"
    );
    for secret in [
        host.token.as_str(),
        guest.token.as_str(),
        invite.as_str(),
        admin_invite.as_str(),
        admin_token,
        "wrong-admin-token-that-must-not-be-logged",
        forged,
        chat,
        signal,
    ] {
        assert!(!text.contains(secret), "the log holds {secret}");
    }
}

/// Opens a WebSocket as if from `address` (through the trusted loopback proxy); the HTTP status
/// and body of a refused upgrade.
async fn socket_from(
    s: &TestServer,
    address: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (u16, Value),
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(other) => panic!("unexpected: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_sockets_are_capped_per_client_address() {
    let s = TestServer::start_with(&[("CONFAB__LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "2")]).await;
    let first = socket_from(&s, "203.0.113.7").await.unwrap();
    let _second = socket_from(&s, "203.0.113.7").await.unwrap();
    let (status, body) = socket_from(&s, "203.0.113.7").await.unwrap_err();
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_connections", "{body}");
    // Another address behind the same proxy is counted on its own.
    let _other = socket_from(&s, "203.0.113.8").await.unwrap();
    drop(first);
    s.stop().await;
}
