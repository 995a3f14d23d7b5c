//! `GET /v2/databases/{cluster}/ca`: the CA certificate a client verifies the cluster's server
//! with, as DigitalOcean answers it (`{"ca": {"certificate": <base64 of the PEM>}}`): the one
//! registered for the target (`ca_certificate`), or 404 when none was.

use axum::extract::State;
use axum::Json;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::TeamCluster;
use crate::state::AppState;

/// `{"ca": {...}}`
#[derive(Serialize, ToSchema)]
pub(crate) struct CaResponse {
    ca: CaView,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct CaView {
    /// The PEM, base64-encoded.
    certificate: String,
}

/// Show the CA certificate of a cluster's server.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/ca", operation_id = "databases_get_ca", tag = "Databases",
    responses((status = 200, description = "The CA certificate", body = CaResponse)))]
pub(super) async fn get(
    TeamCluster { cluster, .. }: TeamCluster,
    State(_): State<AppState>,
) -> Result<Json<CaResponse>, ApiError> {
    let pem = cluster.ca_certificate.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "this cluster has no CA certificate: its target was registered without one (give ca_certificate \
             with sslmode verify-ca or verify-full)",
        )
    })?;
    Ok(Json(CaResponse { ca: CaView { certificate: B64.encode(pem) } }))
}
