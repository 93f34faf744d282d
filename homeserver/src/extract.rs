//! Request extraction shared by the client and admin handlers: bodies that may be left out, and
//! actix's extraction failures answered in the protocol's error shape.

use actix_web::{HttpRequest, web};

use crate::error::{ApiError, ErrorCode};

/// A JSON body as extracted, kept for [`optional_body`] to judge.
pub type JsonResult<T> = Result<web::Json<T>, actix_web::Error>;

/// A body that may be left out, but that must be valid when sent: actix's `Option<Json<T>>`
/// would read a body with a misspelt field as no body at all, and answer for the wrong reason
/// (a join with `{"invite": …}` refused as `invite_required`).
pub fn optional_body<T>(req: &HttpRequest, body: JsonResult<T>) -> Result<Option<T>, ApiError> {
    match body {
        Ok(body) => Ok(Some(body.into_inner())),
        Err(_) if !has_body(req) => Ok(None),
        // `json_error` made it an `ApiError`; anything else is still the client's body at fault.
        Err(err) => Err(err
            .as_error::<ApiError>()
            .cloned()
            .unwrap_or_else(|| ApiError::bad_request(format!("invalid JSON body: {err}")))),
    }
}

fn has_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Turns actix's JSON and query extraction failures into the protocol's error body.
pub fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request bodies are limited to {limit} bytes"),
        ),
        E::ContentType => ApiError::bad_request("send the body as application/json"),
        other => ApiError::bad_request(format!("invalid JSON body: {other}")),
    };
    api.into()
}

/// Same, for query strings.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid query: {err}")).into()
}

/// Same, for path segments.
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid path: {err}")).into()
}
