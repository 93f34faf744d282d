//! The fuzz targets: each takes arbitrary bytes, feeds them to one parser that reads untrusted
//! input, and checks what must hold for every input, so that a panic here is a bug there.
//!
//! Two drivers run these same functions: libFuzzer (the binaries in `fuzz_targets/`, built with
//! coverage instrumentation by `make fuzz`) and the bounded stable run inside `make test`
//! (`homeserver/tests/fuzz.rs`, which includes this file as a module). Allocation is bounded by
//! both drivers too: libFuzzer's `-malloc_limit_mb`, and the test's counting allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confab::error::ErrorCode;
use confab::protocol::{self, Outgoing};
use confab_federation::canonical_json::{self, CanonicalJsonError};
use confab_federation::ids::{DeviceId, RoomId, ServerName, UserId};
use confab_federation::signing::{self, KeyId, SigningError, SigningKey};
use confab_federation::transaction::{self, Transaction, TransactionResponse};
use confab_federation::xmatrix::{self, XMatrixAuth};
use serde_json::Value;

/// A target: its name (also its corpus folder and libFuzzer binary) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the drivers run them.
pub const TARGETS: &[Target] = &[
    ("ws_frame", ws_frame),
    ("xmatrix_header", xmatrix_header),
    ("canonical_json", canonical_json),
    ("federation_transaction", federation_transaction),
    ("identifiers", identifiers),
];

/// Small so that the size check is crossed often; the server's default is 64 KiB.
const MAX_FRAME_BYTES: usize = 4096;
const MAX_EVENT_BYTES: usize = 1024;

/// The WebSocket decoder (`protocol::decode_request`), then what the socket does with the
/// decoded fields that needs no database: chat content checks and the reply frames.
pub fn ws_frame(data: &[u8]) {
    // A text frame that is not UTF-8 never reaches the decoder: the WebSocket layer refuses it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode_request(text, MAX_FRAME_BYTES) {
        Ok(msg) => {
            assert!(text.len() <= MAX_FRAME_BYTES);
            if let Some(id) = &msg.id {
                assert!(protocol::valid_request_id(id), "accepted id {id}");
            }
            if let (Some(kind), Some(ciphertext)) = (&msg.kind, &msg.ciphertext) {
                match protocol::checked_chat_content(kind, ciphertext, MAX_EVENT_BYTES) {
                    Ok(content) => assert_eq!(content["ciphertext"], ciphertext.as_ref()),
                    Err(e) => assert!(
                        matches!(e.code, ErrorCode::BadRequest | ErrorCode::EventTooLarge),
                        "{e}"
                    ),
                }
            }
            if let Some(id) = &msg.id {
                let result = Value::Null;
                let frame = Outgoing::Ack {
                    id,
                    result: &result,
                }
                .to_frame();
                let back: Value = serde_json::from_str(&frame).expect("acks are JSON");
                assert_eq!(&back["id"], id);
            }
        }
        Err(refused) => {
            let code = refused.error.code;
            assert!(
                matches!(code, ErrorCode::BadRequest | ErrorCode::FrameTooLarge),
                "{code:?}"
            );
            if let Some(id) = &refused.id {
                assert!(protocol::valid_request_id(id), "echoed id {id}");
            }
            let frame = Outgoing::Error {
                id: refused.id.as_ref(),
                request: &refused.request,
                code: code.as_str(),
                reason: &refused.error.reason,
                retry_after_ms: None,
            }
            .to_frame();
            let back: Value = serde_json::from_str(&frame).expect("errors are JSON");
            assert_eq!(back["code"], code.as_str());
            assert_eq!(back["request"], refused.request.as_ref());
        }
    }
}

/// The `Authorization: X-Matrix` parser; whatever it accepts formats and parses back the same,
/// and verifying it against a request never panics.
pub fn xmatrix_header(data: &[u8]) {
    // actix hands the middleware `to_str()` of the header, which is visible ASCII; arbitrary
    // UTF-8 is a superset and costs nothing to cover.
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(auth) = XMatrixAuth::parse(header) else {
        return;
    };
    let formatted = auth.to_string();
    assert_eq!(
        XMatrixAuth::parse(&formatted).as_ref(),
        Ok(&auth),
        "{formatted}"
    );
    let us = ServerName::parse("confab.example").unwrap();
    let key = fixed_key();
    let verified = xmatrix::verify_request(
        &auth,
        "PUT",
        "/_matrix/federation/v1/send/1",
        &us,
        None,
        &key.verify_key(),
    );
    // Forging an ed25519 signature is not what a fuzzer will do.
    assert!(verified.is_err());
}

/// Canonical JSON of anything `serde_json` parses off the wire, and JSON signature checks on it.
pub fn canonical_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let server = ServerName::parse("origin.example").unwrap();
    let key = fixed_key();
    match canonical_json::to_canonical_string(&value) {
        Ok(canonical) => {
            // Canonical output is JSON whose canonical form is itself.
            let reparsed: Value = serde_json::from_str(&canonical).expect("canonical JSON parses");
            assert_eq!(
                canonical_json::to_canonical_string(&reparsed).as_deref(),
                Ok(canonical.as_str())
            );
        }
        Err(CanonicalJsonError::Float(_) | CanonicalJsonError::IntegerOutOfRange(_)) => {}
        // serde_json stops at 128 levels, and canonical JSON allows that much.
        Err(CanonicalJsonError::TooDeep) => panic!("parsed JSON refused as too deep"),
    }
    // Verification of whatever signatures the input carries: refused, never a panic.
    let verified = signing::verify_json(&value, &server, key.key_id(), &key.verify_key());
    assert!(verified.is_err());
    for key_id in signing::signing_key_ids(&value, &server) {
        assert!(signing::verify_json(&value, &server, &key_id, &key.verify_key()).is_err());
    }
    // Signing what has a canonical form makes it verify.
    let mut signed = value;
    match signing::sign_json(&mut signed, &server, &key) {
        Ok(()) => signing::verify_json(&signed, &server, key.key_id(), &key.verify_key())
            .expect("a fresh signature verifies"),
        Err(
            SigningError::NotAnObject
            | SigningError::MalformedSignatures
            | SigningError::Canonical(_),
        ) => {}
        Err(other) => panic!("unexpected signing error {other}"),
    }
}

/// A federation transaction body as the receiver reads it: deserialised, validated against the
/// signing origin and the transaction id, answered.
pub fn federation_transaction(data: &[u8]) {
    // The first line, if any, is the transaction id from the path; the rest is the body.
    let (txn_id, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"txn1"[..], data),
    };
    let txn_id = String::from_utf8_lossy(txn_id);
    let checked = transaction::check_txn_id(&txn_id);
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Ok(txn) = <Transaction as serde::Deserialize>::deserialize(&value) else {
        return;
    };
    let signer = ServerName::parse("origin.example").unwrap();
    if txn.validate(&txn_id, &signer).is_ok() {
        assert!(checked.is_ok());
        assert!(txn.pdus.len() <= transaction::MAX_PDUS);
        assert!(txn.edus.len() <= transaction::MAX_EDUS);
        assert_eq!(txn.origin, signer);
        let answer = TransactionResponse::accept_all(&txn);
        assert_eq!(answer.pdus.len(), txn.pdus.len());
    }
    // What the sender side writes, the receiving side reads back unchanged.
    let written = serde_json::to_value(&txn).expect("a transaction serialises");
    let back: Transaction = serde_json::from_value(written).expect("and reads back");
    assert_eq!(back, txn);
}

/// Server names, user ids, room ids, device ids and key ids, and the invite link built from a
/// room id and a token.
pub fn identifiers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = ServerName::parse(text) {
        assert_eq!(name.as_str(), text);
        let rest = text
            .strip_prefix(name.host())
            .expect("the host comes first");
        match name.port() {
            Some(port) => assert_eq!(
                rest.strip_prefix(':').map(str::parse::<u16>),
                Some(Ok(port))
            ),
            None => assert!(rest.is_empty(), "{text}"),
        }
    }
    if let Ok(user) = UserId::parse(text) {
        assert_eq!(
            format!("@{}:{}", user.localpart(), user.server_name()),
            text
        );
        assert_eq!(
            UserId::new(user.localpart(), user.server_name()).as_ref(),
            Ok(&user)
        );
    }
    if let Ok(room) = RoomId::parse(text) {
        assert_eq!(
            format!("!{}:{}", room.localpart(), room.server_name()),
            text
        );
        check_invite_link(room.as_str(), "token");
    }
    check_invite_link("!room:c.example", text);
    if let Ok(device) = DeviceId::parse(text) {
        assert_eq!(device.as_str(), text);
    }
    if let Ok(key_id) = KeyId::parse(text) {
        assert_eq!(format!("ed25519:{}", key_id.version()), text);
    }
    // Through serde, as ids arrive inside JSON bodies.
    let json = Value::String(text.to_owned());
    assert_eq!(
        serde_json::from_value::<UserId>(json.clone()).is_ok(),
        UserId::parse(text).is_ok()
    );
    assert_eq!(
        serde_json::from_value::<RoomId>(json).is_ok(),
        RoomId::parse(text).is_ok()
    );
}

/// The link carries the room id and the token in path segments that decode back exactly.
fn check_invite_link(room_id: &str, token: &str) {
    let link = confab::admin::api::invite_link("https://c.example/", room_id, token);
    let path = link
        .strip_prefix("https://c.example/#/join/")
        .expect("the link's prefix");
    let (room_segment, token_segment) = path.split_once('/').expect("two segments");
    assert_eq!(percent_decode(room_segment), room_id);
    assert_eq!(percent_decode(token_segment), token);
}

fn fixed_key() -> SigningKey {
    SigningKey::from_seed(KeyId::ed25519("fuzz").unwrap(), [7; 32]).unwrap()
}

/// Decodes `%XX` escapes; a stand-in for the browser's `decodeURIComponent`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    assert!(
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%".contains(b)),
        "unescaped character in link segment {s}"
    );
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("escapes decode to UTF-8")
}
