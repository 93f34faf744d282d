//! Authentication of inbound federation requests (server-server API, "Authentication" →
//! "Request Authentication"), as an actix middleware wrapped around every federation scope, so
//! that no handler under it can run for a request that is not verified — not even by forgetting
//! an extractor.
//!
//! In order, each step refusing with a Matrix error before the next one costs anything:
//! federation enabled (`M_UNRECOGNIZED`); an `Authorization: X-Matrix` header that parses
//! (`M_UNAUTHORIZED`); addressed to us (`M_UNAUTHORIZED`, as the spec requires); an origin the
//! operator federates with (`M_FORBIDDEN`); a body within `federation.max_request_bytes`
//! (`M_TOO_LARGE`, from `Content-Length` before reading, else while reading); JSON if present
//! (`M_NOT_JSON`); the origin's key, from the key cache (`M_UNAUTHORIZED`); a body with a canonical
//! JSON form, without which nothing can sign it (`M_BAD_JSON`); and the signature over method,
//! target, origin, destination and body (`M_UNAUTHORIZED`).
//!
//! A verified request carries a [`VerifiedRequest`] in its extensions, read by handlers through
//! the [`FederatedRequest`] extractor; the body is put back, so handlers may also read it.

use std::future::{Ready, ready};

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use bytes::{Bytes, BytesMut};
use confab_federation::ids::ServerName;
use confab_federation::transaction::SEND_PATH_PREFIX;
use confab_federation::xmatrix::{AuthError, XMatrixAuth, verify_request};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::{MatrixError, MatrixErrorCode};
use crate::state::AppState;

/// What the middleware proved about a request.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    /// The server that signed the request.
    pub origin: ServerName,
    /// The JSON body it signed, if any.
    pub content: Option<Value>,
}

/// Extractor of the verified origin and body; only routes under the middleware can use it.
#[derive(Debug, Clone)]
pub struct FederatedRequest(pub VerifiedRequest);

impl FromRequest for FederatedRequest {
    type Error = MatrixError;
    type Future = Ready<Result<Self, MatrixError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<VerifiedRequest>()
                .cloned()
                .map(FederatedRequest)
                .ok_or_else(|| {
                    MatrixError::internal("federation route", &"not behind the auth middleware")
                }),
        )
    }
}

/// The middleware: verifies, then calls the wrapped service, or answers with the Matrix error.
pub async fn authenticate(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match verify(&mut req).await {
        Ok(verified) => {
            // A server that signs requests to us is up: if we had given up delivering to it,
            // take it back.
            if let Some(state) = req.app_data::<web::Data<AppState>>() {
                state.federation_sender.heard_from(&verified.origin).await;
            }
            req.extensions_mut().insert(verified);
            next.call(req).await
        }
        Err(err) => {
            tracing::debug!(path = req.path(), error = %err, "federation request refused");
            Ok(req.error_response(err))
        }
    }
}

async fn verify(req: &mut ServiceRequest) -> Result<VerifiedRequest, MatrixError> {
    let unauthorized =
        |e: &dyn std::fmt::Display| MatrixError::new(MatrixErrorCode::Unauthorized, e.to_string());
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| MatrixError::internal("federation auth", &"no app state"))?;
    let federation = &state.federation;
    if !federation.settings.enabled {
        return Err(MatrixError::new(
            MatrixErrorCode::Unrecognized,
            "federation is disabled on this server",
        ));
    }
    let our_name = &federation.identity.server_name;

    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized(&"missing Authorization: X-Matrix header"))?
        .to_str()
        .map_err(|_| unauthorized(&"the Authorization header is not ASCII"))?;
    let auth = XMatrixAuth::parse(header).map_err(|e| unauthorized(&e))?;
    // Checked before the key lookup, so a misaddressed request never makes us fetch keys.
    if let Some(destination) = &auth.destination
        && destination != our_name
    {
        return Err(unauthorized(&format!(
            "request is addressed to {destination}, not to {our_name}"
        )));
    }
    federation
        .acl
        .check(&auth.origin)
        .map_err(|e| MatrixError::new(MatrixErrorCode::Forbidden, e.to_string()))?;
    // A transaction its origin may not send now (another of its transactions is being handled,
    // or as many as allowed in all) is refused before its body is read or its signature checked,
    // so a sender hammering with transactions costs a header's parse each. Unverified, this tells
    // the claimed origin only what its own next transaction would be told, and admits nothing.
    if let Some(raw) = req.path().strip_prefix(SEND_PATH_PREFIX)
        && let Some(refused) = state
            .transactions
            .gate()
            .would_refuse(&auth.origin, &decoded_segment(raw))
    {
        return Err(refused);
    }

    let body = read_body(req, federation.settings.max_request_bytes).await?;
    let content = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice::<Value>(&body).map_err(|e| {
            MatrixError::new(MatrixErrorCode::NotJson, format!("invalid JSON body: {e}"))
        })?)
    };

    let key = federation
        .keys
        .verify_key(&auth.origin, &auth.key_id, crate::federation::now_ms())
        .await
        .map_err(|e| unauthorized(&e))?;
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path(), |pq| pq.as_str());
    verify_request(
        &auth,
        req.method().as_str(),
        uri,
        our_name,
        content.as_ref(),
        &key,
    )
    .map_err(|e| match e {
        // Not a question of who signed: no signature can cover such a body, so the sender
        // needs to know the body is at fault (floats, integers beyond 2^53).
        AuthError::Canonical(_) => MatrixError::new(MatrixErrorCode::BadJson, e.to_string()),
        e => unauthorized(&e),
    })?;

    req.set_payload(Payload::from(body));
    Ok(VerifiedRequest {
        origin: auth.origin,
        content,
    })
}

/// Reads the whole body, refusing it as soon as it is known to exceed `limit`.
async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<Bytes, MatrixError> {
    let too_large = || {
        MatrixError::new(
            MatrixErrorCode::TooLarge,
            format!("federation request bodies are limited to {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            MatrixError::new(
                MatrixErrorCode::BadJson,
                format!("cannot read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A path segment percent-decoded as the handler's `web::Path` decodes it, so that the early
/// check above and the handler speak of the same transaction id (a copy of one in flight waits
/// for it rather than being refused).
fn decoded_segment(raw: &str) -> std::borrow::Cow<'_, str> {
    match actix_router::Quoter::new(b"", b"").requote(raw.as_bytes()) {
        Some(decoded) => String::from_utf8_lossy(&decoded).into_owned().into(),
        None => raw.into(),
    }
}
