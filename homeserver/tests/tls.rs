//! HTTPS served directly with rustls: a self-signed certificate for 127.0.0.1, a REST call over
//! HTTPS and an authenticated WSS connection, both trusting only that certificate; and the
//! clear refusal of a half-configured, unreadable or mismatched certificate and key.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{PATIENCE, TestServer};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};
use tokio_tungstenite::tungstenite::Message;

struct SelfSigned {
    _dir: tempfile::TempDir,
    cert_pem: String,
    cert_der: Vec<u8>,
    cert_file: String,
    key_file: String,
}

fn self_signed() -> SelfSigned {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_pem = certified.cert.pem();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    SelfSigned {
        _dir: dir,
        cert_pem,
        cert_der: certified.cert.der().to_vec(),
        cert_file: cert_file.display().to_string(),
        key_file: key_file.display().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_and_wss_with_a_self_signed_certificate() {
    let cert = self_signed();
    let server = TestServer::start_with(&[
        ("CONFAB__SERVER__TLS_CERT_FILE", &cert.cert_file),
        ("CONFAB__SERVER__TLS_KEY_FILE", &cert.key_file),
    ])
    .await;
    let https = format!("https://127.0.0.1:{}", server.port);

    // HTTPS with reqwest, trusting only the test certificate.
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = http.get(format!("{https}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let session: Value = http
        .post(format!("{https}/_confab/client/v1/sessions"))
        .json(&json!({"display_name": "Ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap();

    // Plain HTTP on the same port is not served.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/health", server.port))
            .await
            .is_err()
    );

    // WSS: TLS with rustls (ring), then the WebSocket handshake and the protocol's auth.
    let mut roots = RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert_der.clone(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/_confab/client/v1/ws", server.port);
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text(
        json!({"type": "auth", "id": 1, "token": token}).to_string(),
    ))
    .await
    .unwrap();
    let reply = loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected the auth ack, got {other:?}"),
        }
    };
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(reply["result"]["user_id"], session["user_id"]);
    server.stop().await;
}

#[test]
fn a_missing_unreadable_or_mismatched_certificate_or_key_stops_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env("CONFAB__SERVER__TLS_CERT_FILE", "/nonexistent/cert.pem")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls_key_file"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env("CONFAB__SERVER__TLS_CERT_FILE", "/nonexistent/cert.pem")
        .env("CONFAB__SERVER__TLS_KEY_FILE", "/nonexistent/key.pem")
        .env("CONFAB__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls_cert_file /nonexistent/cert.pem"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("postgres").exists(),
        "refused before starting the database"
    );

    // A key that does not belong to the certificate.
    let (one, other) = (self_signed(), self_signed());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env("CONFAB__SERVER__TLS_CERT_FILE", &one.cert_file)
        .env("CONFAB__SERVER__TLS_KEY_FILE", &other.key_file)
        .env("CONFAB__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS certificate and key"), "{stderr}");
}
