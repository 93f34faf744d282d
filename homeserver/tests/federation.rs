//! Federation between real servers on 127.0.0.1: the key endpoint, signed requests accepted after
//! fetching the origin's keys, every refusal with its Matrix error code, the deny list both
//! ways, the address policy refusing loopback unless allowed, and a server name found through
//! its well-known document.
#![allow(clippy::unwrap_used)]

mod support;

use confab::federation::client::OutboundError;
use confab::federation::identity::PUBLISHED_VALIDITY_MS;
use confab_federation::ids::ServerName;
use confab_federation::keys::parse_server_keys_document;
use confab_federation::policy::{AddressClass, PolicyError};
use confab_federation::signing::{KeyId, SigningKey};
use confab_federation::xmatrix::sign_request;
use reqwest::Method;
use serde_json::{Value, json};
use support::TestServer;

const PING: &str = "/_confab/federation/v1/ping";

fn now_ms() -> u64 {
    confab::federation::now_ms()
}

#[tokio::test(flavor = "multi_thread")]
async fn key_endpoint_serves_a_self_signed_document() {
    let s = TestServer::start().await;
    let res = s
        .http
        .get(format!("{}/_matrix/key/v2/server", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    let before = now_ms();
    let keys = parse_server_keys_document(&doc, &s.server_name(), before).unwrap();
    let ours = &s.state.federation.identity.key;
    assert_eq!(keys.verify_keys.len(), 1);
    assert_eq!(keys.verify_keys[ours.key_id()], ours.verify_key());
    assert!(keys.valid_until_ts > before + PUBLISHED_VALIDITY_MS - 60_000);
    assert!(keys.valid_until_ts <= before + PUBLISHED_VALIDITY_MS + 60_000);
    assert_eq!(doc["old_verify_keys"], json!({}));
    assert!(doc["signatures"][s.server_name().as_str()][ours.key_id().as_str()].is_string());

    // The key lives in the data directory, owner-only, and survives a restart.
    let key_file = s.data_dir.path().join("signing.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key_id = ours.key_id().clone();
    let s = s.restart().await;
    assert_eq!(s.state.federation.identity.key.key_id(), &key_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_requests_are_accepted_after_fetching_the_origins_keys() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    assert!(b.state.federation.keys.cached(&a.server_name()).is_none());

    let res = a
        .signed_request(&b.server_name(), Method::GET, PING, None)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["origin"], a.server_name().as_str());
    assert_eq!(res.body["server_name"], b.server_name().as_str());
    assert_eq!(res.body["content"], Value::Null);

    // B fetched and cached A's keys to check the signature.
    let cached = b.state.federation.keys.cached(&a.server_name()).unwrap();
    let a_key = &a.state.federation.identity.key;
    assert_eq!(cached.verify_keys[a_key.key_id()], a_key.verify_key());

    // A body is covered by the signature and reaches the handler; a query string too.
    let content = json!({"hello": "world", "n": [1, 2, 3]});
    let res = a
        .signed_request(
            &b.server_name(),
            Method::POST,
            &format!("{PING}?x=%20y"),
            Some(&content),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["content"], content);
}

/// Sends a request to `to` signed by `key` as `origin` for `destination`, optionally spoiling
/// the signature; returns status and body.
async fn send_signed(
    to: &TestServer,
    origin: &ServerName,
    destination: &ServerName,
    key: &SigningKey,
    path: &str,
    content: Option<&Value>,
    forge: bool,
) -> (u16, Value) {
    let method = if content.is_some() { "POST" } else { "GET" };
    let mut auth = sign_request(origin, destination, method, path, content, key).unwrap();
    if forge {
        auth.signature[0] ^= 1;
    }
    let mut req = to
        .http
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", to.base),
        )
        .header("Authorization", auth.to_string());
    if let Some(content) = content {
        req = req.json(content);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn unverifiable_requests_are_refused_before_any_handler() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let a_key = &a.state.federation.identity.key;

    // The baseline: a correctly signed request by hand is accepted.
    let (status, body) = send_signed(&b, &a_name, &b_name, a_key, PING, None, false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["origin"], a_name.as_str());

    // No header at all, and a header of another scheme.
    let res = b
        .http
        .get(format!("{}{PING}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(errcode(&res.json().await.unwrap()), "M_UNAUTHORIZED");
    let res = b
        .http
        .get(format!("{}{PING}", b.base))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // A forged signature.
    let (status, body) = send_signed(&b, &a_name, &b_name, a_key, PING, None, true).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");

    // Addressed to another server.
    let other = ServerName::parse("other.example").unwrap();
    let (status, body) = send_signed(&b, &a_name, &other, a_key, PING, None, false).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("other.example"),
        "{body}"
    );

    // Signed with a key A never published.
    let stranger = SigningKey::generate(KeyId::ed25519("bogus").unwrap()).unwrap();
    let (status, body) = send_signed(&b, &a_name, &b_name, &stranger, PING, None, false).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("ed25519:bogus"),
        "{body}"
    );

    // Unknown endpoints are only revealed to authenticated servers.
    let unknown = "/_matrix/federation/v1/nothing-here";
    let (status, body) = send_signed(&b, &a_name, &b_name, a_key, unknown, None, true).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");
    let (status, body) = send_signed(&b, &a_name, &b_name, a_key, unknown, None, false).await;
    assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_servers_are_refused_both_ways() {
    let a = TestServer::start_federating(&[]).await;
    let a_name = a.server_name();
    let b =
        TestServer::start_federating(&[("CONFAB__FEDERATION__DENIED_SERVERS", a_name.as_str())])
            .await;

    // Inbound: B refuses A's correctly signed request, without fetching A's keys.
    let res = a
        .signed_request(&b.server_name(), Method::GET, PING, None)
        .await;
    assert_eq!(
        (res.status, errcode(&res.body)),
        (403, "M_FORBIDDEN"),
        "{}",
        res.body
    );
    assert!(b.state.federation.keys.cached(&a_name).is_none());

    // Outbound: B does not even connect to A.
    let err = b
        .state
        .federation
        .client
        .request(&a_name, Method::GET, PING, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, OutboundError::Policy(PolicyError::Denied(_))),
        "{err}"
    );

    // An allow list that does not name A has the same effect.
    let c =
        TestServer::start_federating(&[("CONFAB__FEDERATION__ALLOWED_SERVERS", "friend.example")])
            .await;
    let res = a
        .signed_request(&c.server_name(), Method::GET, PING, None)
        .await;
    assert_eq!(
        (res.status, errcode(&res.body)),
        (403, "M_FORBIDDEN"),
        "{}",
        res.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_and_plain_http_are_refused_unless_allowed() {
    let open = TestServer::start_federating(&[]).await;
    // Default settings: HTTPS only, public addresses only.
    let strict = TestServer::start().await;
    let client = &strict.state.federation.client;

    // An IP literal on loopback is refused before connecting…
    let err = client
        .request(&open.server_name(), Method::GET, PING, None)
        .await
        .unwrap_err();
    match &err {
        OutboundError::Policy(PolicyError::AddressRefused { class, .. }) => {
            assert_eq!(*class, AddressClass::Loopback)
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("allow_private_addresses"), "{err}");
    // … and so is a host name that resolves to loopback (checked inside the resolver).
    let by_name = ServerName::parse(&format!("localhost:{}", open.port)).unwrap();
    let err = client
        .request(&by_name, Method::GET, PING, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OutboundError::Policy(PolicyError::AddressRefused { .. })
        ),
        "{err}"
    );

    // Inbound, the strict server cannot fetch the keys of a loopback origin, so it refuses.
    let res = open
        .signed_request(&strict.server_name(), Method::GET, PING, None)
        .await;
    assert_eq!(
        (res.status, errcode(&res.body)),
        (401, "M_UNAUTHORIZED"),
        "{}",
        res.body
    );
    assert!(
        res.body["error"]
            .as_str()
            .unwrap()
            .contains("refusing to connect"),
        "{}",
        res.body
    );

    // Private addresses allowed but not plain HTTP: it speaks TLS to a plain HTTP server,
    // which fails, and never downgrades.
    let tls_only =
        TestServer::start_with(&[("CONFAB__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true")]).await;
    let err = tls_only
        .state
        .federation
        .client
        .request(&open.server_name(), Method::GET, PING, None)
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::Http { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_name_without_a_port_is_found_through_its_well_known_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // `localhost` has no port, so its document is at http://localhost/.well-known/matrix/server:
    // port 80, which only root (or CAP_NET_BIND_SERVICE) may serve. CI runs as root.
    let listener = match std::net::TcpListener::bind(("127.0.0.1", 80)) {
        Ok(listener) => listener,
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && std::env::var_os("CI").is_none() =>
        {
            eprintln!("not run: serving port 80 needs root ({e}); CI runs it");
            return;
        }
        Err(e) => panic!("cannot serve a well-known document on 127.0.0.1:80: {e}"),
    };
    let a = TestServer::start_federating(&[("CONFAB__SERVER__NAME", "localhost")]).await;
    let b = TestServer::start_federating(&[]).await;

    let lookups = Arc::new(AtomicUsize::new(0));
    let document = json!({ "m.server": format!("127.0.0.1:{}", a.port) }).to_string();
    let counted = lookups.clone();
    let well_known = actix_web::HttpServer::new(move || {
        let (counted, document) = (counted.clone(), document.clone());
        actix_web::App::new().route(
            "/.well-known/matrix/server",
            actix_web::web::get().to(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let document = document.clone();
                async move {
                    actix_web::HttpResponse::Ok()
                        .insert_header(("Cache-Control", "max-age=3600"))
                        .content_type("application/json")
                        .body(document)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let stop = well_known.handle();
    tokio::spawn(well_known);

    let localhost = ServerName::parse("localhost").unwrap();
    for _ in 0..3 {
        let res = b.signed_request(&localhost, Method::GET, PING, None).await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.body["server_name"], "localhost");
        assert_eq!(res.body["origin"], b.server_name().as_str());
    }
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "the delegation is looked up once and then cached"
    );
    stop.stop(true).await;
}
