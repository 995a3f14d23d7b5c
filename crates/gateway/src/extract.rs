//! Request extractors that turn every malformed input into a DigitalOcean-style error: JSON
//! bodies (400 for unparsable JSON, 422 for well-formed JSON of the wrong shape, whatever the
//! Content-Type) and cluster ids in paths (anything that is not a UUID is simply not found).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON request body.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(e.status(), "The request body is too large.")
            } else {
                ApiError::bad_request("error reading request body")
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(ApiJson).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::unprocessable(format!("invalid request: {e}")),
            _ => ApiError::bad_request(format!("error parsing request body: {e}")),
        })
    }
}

/// Parses a cluster id from a path; a malformed id names no cluster.
pub(crate) fn cluster_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found())
}
