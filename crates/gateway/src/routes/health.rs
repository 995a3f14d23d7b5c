//! Open endpoints, without authentication: `/healthz` (the process answers), `/readyz` (the
//! metadata database answers) and `/v2/openapi.json` (the API document).

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// `{"status": ...}`
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "Health", security(()),
    responses((status = 200, description = "The process answers", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The metadata database answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "Health", security(()),
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "The metadata database cannot be reached", body = ErrorBody),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.store.ping().await.map_err(|_| ApiError::unavailable())?;
    Ok(Json(Health { status: "ready" }))
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    super::api_router().into_openapi().to_pretty_json().expect("the OpenAPI document serialises")
});

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/v2/openapi.json", operation_id = "openapi", tag = "Health", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}
