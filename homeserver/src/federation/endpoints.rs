//! The thin federation handlers. Authentication happened in [`super::auth`] before these run.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::auth::FederatedRequest;
use super::error::{MatrixError, MatrixErrorCode};
use crate::state::AppState;

type Data = web::Data<AppState>;

/// `GET /_matrix/key/v2/server` ("Retrieving server keys" → "Publishing Keys").
pub async fn server_keys(state: Data) -> Result<HttpResponse, MatrixError> {
    let federation = &state.federation;
    if !federation.settings.enabled {
        return Err(unrecognized_error());
    }
    let document = federation
        .identity
        .key_document(super::now_ms())
        .map_err(|e| MatrixError::internal("key document", &e))?;
    Ok(HttpResponse::Ok().json(document))
}

/// `GET|POST /_confab/federation/v1/ping`: who we are, who the verified caller is, and the body
/// it signed.
pub async fn ping(state: Data, FederatedRequest(request): FederatedRequest) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "server_name": state.federation.identity.server_name,
        "origin": request.origin,
        "content": request.content,
    }))
}

/// `PUT /_matrix/federation/v1/send/{txnId}` ("Transactions" → "Sending Transactions"): handled
/// once per `(origin, txnId)` by [`super::inbox::TransactionReceiver`], which gives a retry the
/// answer the first copy got.
pub async fn send_transaction(
    state: Data,
    txn_id: web::Path<String>,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, MatrixError> {
    let response = state
        .transactions
        .receive(&request.origin, &txn_id, request.content.as_ref())
        .await?;
    Ok(HttpResponse::Ok().json(response))
}

/// Any other path under a federation scope (after authentication).
pub async fn unrecognized() -> Result<HttpResponse, MatrixError> {
    Err(unrecognized_error())
}

fn unrecognized_error() -> MatrixError {
    MatrixError::new(MatrixErrorCode::Unrecognized, "unrecognized request")
}
