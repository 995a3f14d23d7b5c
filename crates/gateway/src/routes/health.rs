//! Open endpoints, without authentication: `/healthz` (the process answers), `/readyz` (the
//! metadata database answers and the in-process reconciler is turning) and `/v2/openapi.json`
//! (the API document).

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// `{"status": ...}`
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// What `/readyz` checked.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `ok` or `unreachable`.
    metadata_database: &'static str,
    /// `ok`, `stalled`, or `elsewhere` (this process runs no reconciler).
    reconciler: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "Health", security(()),
    responses((status = 200, description = "The process answers", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The metadata database answers and the reconciler (if this process runs one) is turning.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "Health", security(()),
    responses((status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "Not ready: see which part", body = Readiness)))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database_ok =
        matches!(tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await, Ok(Ok(())));
    let reconciler = match &state.config.reconciler {
        None => "elsewhere",
        Some(stats) if stats.is_alive(Duration::from_secs(15)) => "ok",
        Some(_) => "stalled",
    };
    let ready = database_ok && reconciler != "stalled";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let readiness = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        metadata_database: if database_ok { "ok" } else { "unreachable" },
        reconciler,
    };
    (status, Json(readiness))
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| super::api_document().to_pretty_json().expect("the OpenAPI document serialises"));

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/v2/openapi.json", operation_id = "openapi", tag = "Health", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}
