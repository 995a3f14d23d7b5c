//! API errors in DigitalOcean's shape: `{"id", "message", "request_id"}`, with `id` naming the
//! status (`not_found`, `unprocessable_entity`, ...). Every error answer, including those made
//! by axum or tower layers (unknown routes, timeouts, oversized bodies), leaves in this shape:
//! [`finish_errors`] rewrites any non-JSON error body and adds the request id.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After` (429 only).
    pub retry_after: Option<u64>,
    /// `ratelimit-limit`, `-remaining` and `-reset` (429 only).
    pub rate_limit: Option<(u32, u32, u64)>,
    /// Fields added to the error body beside `id`, `message` and `request_id` (for example the
    /// dependency report of a refused deletion).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

/// DigitalOcean's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// The status as a word: `not_found`, `unprocessable_entity`, `unauthorized`, ...
    id: &'static str,
    /// What went wrong, in a sentence.
    message: String,
    /// The request's id (also in the `x-request-id` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None, rate_limit: None, details: None }
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unable to authenticate you.")
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "The resource you requested could not be found.")
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// 429 with `Retry-After`: the wait, rounded up to whole seconds (at least one).
    pub fn too_many_requests(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, message);
        error.retry_after = Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
        error
    }
    /// This error with `value` added to its body as `key`.
    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details.get_or_insert_with(Default::default).insert(key.to_string(), value);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Unexpected server-side error")
    }
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is temporarily unavailable: its metadata database cannot be reached.",
        )
    }
}

/// DigitalOcean's error id for a status.
fn error_id(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        s if s.is_server_error() => "server_error",
        _ => "error",
    }
}

/// The message used when a layer produced an error without one.
fn default_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "The resource you requested could not be found.",
        StatusCode::METHOD_NOT_ALLOWED => "The method is not allowed for the requested resource.",
        StatusCode::REQUEST_TIMEOUT => "The request took too long to complete.",
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.",
        s if s.is_server_error() => "Unexpected server-side error",
        _ => "The request could not be processed.",
    }
}

impl From<pgplane_core::Error> for ApiError {
    fn from(e: pgplane_core::Error) -> Self {
        use pgplane_core::Error;
        match e {
            Error::Invalid(m) => ApiError::unprocessable(m),
            Error::NotFound(_) => ApiError::not_found(),
            Error::Conflict(m) => ApiError::conflict(m),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "metadata database unavailable");
                ApiError::unavailable()
            }
            e => {
                tracing::error!(error = %e, "internal error");
                ApiError::internal()
            }
        }
    }
}

/// Marker carried by error responses so that [`finish_errors`] can add the request id.
#[derive(Clone)]
struct ErrorMessage(String, Option<serde_json::Map<String, serde_json::Value>>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some((limit, remaining, reset)) = self.rate_limit {
            crate::rate::set_rate_headers(response.headers_mut(), limit, remaining, reset);
        }
        response.extensions_mut().insert(ErrorMessage(self.message, self.details));
        response
    }
}

/// Middleware: gives every error response a DigitalOcean error body with the request id.
pub(crate) async fn finish_errors(request: Request, next: Next) -> Response {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let marker = response.extensions().get::<ErrorMessage>().cloned();
    let (message, details) = match marker {
        Some(ErrorMessage(message, details)) => (Some(message), details),
        None => (None, None),
    };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if message.is_none() && is_json {
        return response;
    }
    let message = message.unwrap_or_else(|| default_message(status).to_string());
    let mut body = serde_json::to_value(ErrorBody { id: error_id(status), message, request_id })
        .expect("error bodies serialise");
    if let (Some(details), Some(fields)) = (details, body.as_object_mut()) {
        for (key, value) in details {
            fields.entry(key).or_insert(value);
        }
    }
    let body = serde_json::to_vec(&body).expect("error bodies serialise");
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Fallback for unknown routes: a JSON 404 (PyDo cannot parse a plain-text one).
pub(crate) async fn route_not_found() -> ApiError {
    ApiError::not_found()
}

/// Fallback for known routes called with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, default_message(StatusCode::METHOD_NOT_ALLOWED))
}
