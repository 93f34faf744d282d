//! `PUT /_matrix/federation/v1/send/{txnId}`: the wire types of a federation transaction
//! (server-server API, "Transactions"), and the checks a receiver applies before handling one.
//!
//! A transaction carries Confab's persistent room events as PDUs and its ephemeral traffic
//! (typing, presence, signaling) as EDUs, at most [`MAX_PDUS`] and [`MAX_EDUS`] of them, as in
//! Matrix. A Confab PDU is not a Matrix room event (there is no event graph: a room's origin orders
//! everything, see DESIGN.md): it is a JSON object with an `event_id`, a `room_id`, a `type` and
//! the `order` the sender's queue gave it for this destination, plus whatever the room layer puts
//! in it, carried through untouched. The answer maps each PDU's `event_id` to `{}` or
//! `{"error": …}`, as Matrix's does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::ServerName;

/// Most PDUs in one transaction (server-server API, "Transactions").
pub const MAX_PDUS: usize = 50;
/// Most EDUs in one transaction.
pub const MAX_EDUS: usize = 100;
/// The path of the endpoint, before the transaction id.
pub const SEND_PATH_PREFIX: &str = "/_matrix/federation/v1/send/";
/// Longest transaction id accepted; Matrix leaves it opaque, Confab's are much shorter.
pub const MAX_TXN_ID_LEN: usize = 255;

/// Why a received transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// More PDUs than [`MAX_PDUS`].
    #[error("a transaction may carry at most {MAX_PDUS} PDUs, this one has {0}")]
    TooManyPdus(usize),
    /// More EDUs than [`MAX_EDUS`].
    #[error("a transaction may carry at most {MAX_EDUS} EDUs, this one has {0}")]
    TooManyEdus(usize),
    /// The body's `origin` is not the server that signed the request.
    #[error("the transaction's origin {claimed} is not the signing server {signed}")]
    OriginMismatch {
        /// The `origin` in the body.
        claimed: String,
        /// The origin proven by the X-Matrix signature.
        signed: String,
    },
    /// The transaction id is empty, too long or not printable ASCII.
    #[error("invalid transaction id")]
    InvalidTxnId,
    /// Two PDUs share an `event_id`, so the answer could not name each one.
    #[error("the event id {0} appears twice in the transaction")]
    DuplicateEventId(String),
}

/// The body of `PUT /_matrix/federation/v1/send/{txnId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// The sending server; must be the server that signed the request.
    pub origin: ServerName,
    /// When the sender built the transaction, in milliseconds since the epoch.
    pub origin_server_ts: u64,
    /// Persistent room events, in the order the sender's queue holds them.
    #[serde(default)]
    pub pdus: Vec<Pdu>,
    /// Ephemeral events, delivered best-effort.
    #[serde(default)]
    pub edus: Vec<Edu>,
}

impl Transaction {
    /// The checks a receiver makes before handling anything in the transaction: the id, the
    /// limits, the origin against the one the request's signature proved, and PDU ids unique.
    pub fn validate(
        &self,
        txn_id: &str,
        signed_origin: &ServerName,
    ) -> Result<(), TransactionError> {
        check_txn_id(txn_id)?;
        if self.pdus.len() > MAX_PDUS {
            return Err(TransactionError::TooManyPdus(self.pdus.len()));
        }
        if self.edus.len() > MAX_EDUS {
            return Err(TransactionError::TooManyEdus(self.edus.len()));
        }
        if &self.origin != signed_origin {
            return Err(TransactionError::OriginMismatch {
                claimed: self.origin.to_string(),
                signed: signed_origin.to_string(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for pdu in &self.pdus {
            if !seen.insert(pdu.event_id.as_str()) {
                return Err(TransactionError::DuplicateEventId(pdu.event_id.clone()));
            }
        }
        Ok(())
    }
}

/// Checks that a transaction id is usable as a path segment and a key: 1 to
/// [`MAX_TXN_ID_LEN`] printable ASCII characters other than `/`.
pub fn check_txn_id(txn_id: &str) -> Result<(), TransactionError> {
    let ok = !txn_id.is_empty()
        && txn_id.len() <= MAX_TXN_ID_LEN
        && txn_id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(TransactionError::InvalidTxnId)
    }
}

/// One persistent event for a destination: chat, membership, room state, room deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pdu {
    /// Unique id of the event; the answer is keyed by it.
    pub event_id: String,
    /// The room it belongs to.
    pub room_id: String,
    /// What kind of event it is, e.g. `confab.chat`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its position in the sender's queue for this destination: strictly increasing across the
    /// transactions one origin sends to one destination. Assigned by the sender when queued;
    /// whatever the caller put there is replaced.
    #[serde(default)]
    pub order: i64,
    /// Every other field, carried through as it is.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One ephemeral event: typing, presence, signaling. Matrix's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edu {
    /// What kind of EDU it is, e.g. `m.typing`.
    pub edu_type: String,
    /// Its content.
    #[serde(default)]
    pub content: Value,
}

/// The outcome for one PDU: `{}` when accepted, `{"error": "…"}` when not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PduResult {
    /// Why the PDU was refused; absent when it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The 200 answer to a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionResponse {
    /// The outcome of each PDU, by event id.
    #[serde(default)]
    pub pdus: BTreeMap<String, PduResult>,
}

impl TransactionResponse {
    /// The answer that accepts every PDU of `transaction`.
    pub fn accept_all(transaction: &Transaction) -> Self {
        Self {
            pdus: transaction
                .pdus
                .iter()
                .map(|p| (p.event_id.clone(), PduResult::default()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn origin() -> ServerName {
        ServerName::parse("a.example:8448").unwrap()
    }

    fn pdu(n: i64) -> Pdu {
        serde_json::from_value(json!({
            "event_id": format!("$e{n}"), "room_id": "!r:a.example", "type": "confab.chat",
            "order": n, "content": {"ciphertext": "x"}, "sender": "@u:a.example"
        }))
        .unwrap()
    }

    fn txn(pdus: usize, edus: usize) -> Transaction {
        Transaction {
            origin: origin(),
            origin_server_ts: 1_700_000_000_000,
            pdus: (0..pdus).map(|n| pdu(n as i64)).collect(),
            edus: (0..edus)
                .map(|_| Edu {
                    edu_type: "m.typing".into(),
                    content: json!({"typing": true}),
                })
                .collect(),
        }
    }

    #[test]
    fn transaction_round_trips_with_unknown_pdu_fields_kept() {
        let t = txn(2, 1);
        let wire = serde_json::to_value(&t).unwrap();
        assert_eq!(wire["origin"], "a.example:8448");
        assert_eq!(wire["pdus"][1]["type"], "confab.chat");
        assert_eq!(wire["pdus"][1]["order"], 1);
        assert_eq!(wire["pdus"][1]["sender"], "@u:a.example");
        assert_eq!(wire["pdus"][0]["content"]["ciphertext"], "x");
        assert_eq!(wire["edus"][0]["edu_type"], "m.typing");
        let back: Transaction = serde_json::from_value(wire).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn missing_lists_are_empty_and_bad_shapes_refused() {
        let t: Transaction =
            serde_json::from_value(json!({"origin": "a.example:8448", "origin_server_ts": 1}))
                .unwrap();
        assert!(t.pdus.is_empty() && t.edus.is_empty());
        let no_room = json!({"origin": "a.example", "origin_server_ts": 1,
            "pdus": [{"event_id": "$x", "type": "t"}]});
        assert!(serde_json::from_value::<Transaction>(no_room).is_err());
        let bad_origin = json!({"origin": "not a name", "origin_server_ts": 1});
        assert!(serde_json::from_value::<Transaction>(bad_origin).is_err());
    }

    #[test]
    fn response_has_the_matrix_shape() {
        let mut r = TransactionResponse::accept_all(&txn(1, 0));
        r.pdus.insert(
            "$bad".into(),
            PduResult {
                error: Some("unknown room".into()),
            },
        );
        let wire = serde_json::to_value(&r).unwrap();
        assert_eq!(
            wire,
            json!({"pdus": {"$e0": {}, "$bad": {"error": "unknown room"}}})
        );
        assert_eq!(
            serde_json::from_value::<TransactionResponse>(wire).unwrap(),
            r
        );
    }

    #[test]
    fn limits_origin_and_ids_are_checked() {
        let o = origin();
        assert_eq!(txn(MAX_PDUS, MAX_EDUS).validate("t1", &o), Ok(()));
        assert_eq!(
            txn(MAX_PDUS + 1, 0).validate("t1", &o),
            Err(TransactionError::TooManyPdus(51))
        );
        assert_eq!(
            txn(0, MAX_EDUS + 1).validate("t1", &o),
            Err(TransactionError::TooManyEdus(101))
        );
        let other = ServerName::parse("b.example").unwrap();
        assert!(matches!(
            txn(1, 0).validate("t1", &other),
            Err(TransactionError::OriginMismatch { .. })
        ));
        for bad in ["", "a/b", "a b", &"x".repeat(256)] {
            assert_eq!(
                txn(0, 0).validate(bad, &o),
                Err(TransactionError::InvalidTxnId),
                "{bad:?}"
            );
        }
        let mut dup = txn(2, 0);
        dup.pdus[1].event_id = dup.pdus[0].event_id.clone();
        assert_eq!(
            dup.validate("t", &o),
            Err(TransactionError::DuplicateEventId("$e0".into()))
        );
    }
}
