//! `confab federation …` run as a process: the spec's signing vector, verification, request
//! signing, and a signed request from a real server's key to another real server.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use confab_federation::ids::ServerName;
use confab_federation::signing::{KeyId, SigningKey};
use confab_federation::unpadded_base64;
use confab_federation::xmatrix::{XMatrixAuth, verify_request};
use serde_json::{Value, json};
use support::TestServer;

/// "Cryptographic Test Vectors" → "Signing Key" and "JSON Signing".
const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const EMPTY_SIGNATURE: &str =
    "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ";

fn confab(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn spec_key() -> SigningKey {
    let seed = unpadded_base64::decode_array(SEED).unwrap();
    SigningKey::from_seed(KeyId::ed25519("1").unwrap(), seed).unwrap()
}

#[test]
fn sign_json_reproduces_the_spec_vector() {
    let args = [
        "federation",
        "sign-json",
        "--seed",
        SEED,
        "--key-id",
        "ed25519:1",
        "--server-name",
        "domain",
    ];
    let out = confab(&args, "{}");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out).trim_end(),
        format!(r#"{{"signatures":{{"domain":{{"ed25519:1":"{EMPTY_SIGNATURE}"}}}}}}"#)
    );

    // From a file too, with the second vector's object.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.json");
    std::fs::write(&file, r#"{"two": "Two", "one": 1}"#).unwrap();
    let mut with_file = args.to_vec();
    with_file.push(file.to_str().unwrap());
    let out = confab(&with_file, "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out).trim_end(),
        r#"{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}"#
    );

    let out = confab(&args, "not json");
    assert!(!out.status.success());
}

#[test]
fn verify_json_says_valid_or_why_not() {
    let public = spec_key().verify_key().to_base64();
    let args = [
        "federation",
        "verify-json",
        "--key",
        public.as_str(),
        "--key-id",
        "ed25519:1",
        "--server-name",
        "domain",
    ];
    let signed = format!(r#"{{"signatures":{{"domain":{{"ed25519:1":"{EMPTY_SIGNATURE}"}}}}}}"#);
    let out = confab(&args, &signed);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim_end(), "valid");

    let tampered = signed.replacen('{', r#"{"extra":1,"#, 1);
    let out = confab(&args, &tampered);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid"), "{err}");

    let out = confab(&args, "{}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no signature")
    );
}

#[test]
fn sign_request_prints_a_header_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"pdus": []}"#).unwrap();
    let uri = "/_matrix/federation/v1/send/1?a=b";
    let out = confab(
        &[
            "federation",
            "sign-request",
            "--seed",
            SEED,
            "--key-id",
            "ed25519:1",
            "--origin",
            "origin.example",
            "--destination",
            "dest.example",
            "--method",
            "PUT",
            "--uri",
            uri,
            "--content",
            body.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let header = stdout(&out);
    assert!(
        header.starts_with("X-Matrix origin=\"origin.example\""),
        "{header}"
    );
    let auth = XMatrixAuth::parse(header.trim_end()).unwrap();
    let dest = ServerName::parse("dest.example").unwrap();
    let content = json!({"pdus": []});
    let key = spec_key().verify_key();
    assert_eq!(
        verify_request(&auth, "PUT", uri, &dest, Some(&content), &key),
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_sends_with_the_servers_own_key() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    // The CLI acts as A: same name, same data directory (hence key); A keeps serving its keys.
    let config = a.data_dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"{}\"\ndata_dir = \"{}\"\n\n[federation]\nallow_insecure_http = true\nallow_private_addresses = true\n",
            a.server_name(),
            a.data_dir.path().display()
        ),
    )
    .unwrap();
    let b_name = b.server_name().to_string();
    let run = |path: &'static str| {
        let (config, b_name) = (config.clone(), b_name.clone());
        tokio::task::spawn_blocking(move || {
            confab(
                &[
                    "federation",
                    "request",
                    "--to",
                    &b_name,
                    "--path",
                    path,
                    "--config",
                    config.to_str().unwrap(),
                ],
                "",
            )
        })
    };
    let out = run("/_confab/federation/v1/ping").await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let body: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(body["origin"], a.server_name().as_str());
    assert_eq!(body["server_name"], b_name.as_str());

    // A refusal is printed and fails the command.
    let out = run("/_matrix/federation/v1/nothing").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let body: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}
