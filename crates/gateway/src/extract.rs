//! Request extractors that turn every malformed input into a DigitalOcean-style error: JSON
//! bodies (400 for unparsable JSON, 422 for well-formed JSON of the wrong shape, whatever the
//! Content-Type; 413 over the size limit; 422 naming a required field that is absent), query
//! strings (422 for any the handler's options do not accept, repeated keys included), and the
//! cluster in a path (anything that is not a UUID of one of the caller's team's clusters is
//! simply not found). Before any of them, control characters (NUL included) in a path (404) or
//! a query (422) are refused for every route, so that none reaches a store query or a target.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use pgplane_core::model::Cluster;

use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::BODY_LIMIT;
use crate::state::AppState;

/// How much of an oversized body is read (and thrown away) before answering 413, so that a
/// client still writing it gets the answer instead of a broken connection.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// Reads a request body of at most the body limit; a larger one is refused with 413.
pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("error reading request body"))?;
        total += chunk.len();
        if total <= BODY_LIMIT {
            kept.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > BODY_LIMIT {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large."));
    }
    Ok(Bytes::from(kept))
}

/// A JSON request body.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body()).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(ApiJson).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::unprocessable(format!("invalid request: {e}")),
            _ => ApiError::bad_request(format!("error parsing request body: {e}")),
        })
    }
}

/// A field a request body must have; 422 naming it when it is absent.
pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::unprocessable(format!("invalid request: {field} field required")))
}

/// A query string, parsed into the handler's options; 422 when it does not fit them.
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(query)| ApiQuery(query))
            .map_err(|e| ApiError::unprocessable(format!("invalid query: {}", e.body_text())))
    }
}

/// The decoded (key, value) pairs of a query string, as [`ApiQuery`] reads them.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// Middleware: refuses a path (404) or query (422) that carries a control character once
/// decoded (NUL included): no name pgplane manages has one, and PostgreSQL refuses a NUL in
/// text outright.
pub(crate) async fn refuse_control_characters(request: Request, next: Next) -> Result<Response, ApiError> {
    let has_control = |s: &str| s.chars().any(char::is_control);
    let path = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy();
    if has_control(&path) {
        return Err(ApiError::not_found());
    }
    if let Some(query) = request.uri().query() {
        if query_pairs(query).any(|(k, v)| has_control(&k) || has_control(&v)) {
            return Err(ApiError::unprocessable("invalid query: control characters are not allowed"));
        }
    }
    Ok(next.run(request).await)
}

/// Parses a cluster id from a path; a malformed id names no cluster.
pub(crate) fn cluster_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found())
}

/// The path parameter that names a cluster.
const CLUSTER_PARAM: &str = "database_cluster_uuid";

/// The caller and the state: what a handler about the caller's team as a whole starts from
/// (or one that reads the cluster in its path itself, with what it needs about it).
pub(crate) struct Team {
    pub state: AppState,
    pub caller: Caller,
}

impl FromRequestParts<AppState> for Team {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Team { state: state.clone(), caller })
    }
}

/// The cluster the path names, if it is one of the caller's team's (404 otherwise), with the
/// caller, the state and the request's audit note: what every handler under
/// `/v2/databases/{cluster}` starts from.
pub(crate) struct TeamCluster {
    pub state: AppState,
    pub caller: Caller,
    pub cluster: Cluster,
    pub note: AuditNote,
}

impl FromRequestParts<AppState> for TeamCluster {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Team { state, caller } = Team::from_request_parts(parts, state).await?;
        let params =
            RawPathParams::from_request_parts(parts, &state).await.map_err(|_| ApiError::not_found())?;
        let raw = params.iter().find(|(key, _)| *key == CLUSTER_PARAM).map(|(_, value)| value);
        let id = cluster_id(raw.ok_or_else(ApiError::not_found)?)?;
        let cluster = state.store.get_cluster(caller.team_id, id).await?;
        let Ok(note) = AuditNote::from_request_parts(parts, &state).await;
        Ok(TeamCluster { state, caller, cluster, note })
    }
}
