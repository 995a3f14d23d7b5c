//! `/v2/audit_events` (a pgplane extension): the caller's team's audit log, newest first.

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{ApiQuery, Team};
use crate::views::rfc3339;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only events about this cluster.
    cluster_id: Option<Uuid>,
    /// How many events at most (default 100, at most 1000).
    limit: Option<i64>,
}

/// One recorded request.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEventView {
    id: i64,
    at: String,
    token_id: String,
    action: String,
    cluster_id: Option<Uuid>,
    object: Option<String>,
    /// The HTTP status of the answer.
    status: i32,
    request_id: Option<String>,
    /// What the request chose beyond its path: for a user's deletion, its heir (`reassign_to`)
    /// and ownership mode (`if_owns`).
    #[schema(value_type = Option<Object>)]
    detail: Option<serde_json::Value>,
}

/// `{"audit_events": [...]}`
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEventsResponse {
    audit_events: Vec<AuditEventView>,
}

/// The team's audit log: every mutating request, with its outcome.
#[utoipa::path(get, path = "/v2/audit_events", operation_id = "audit_events_list", tag = "Audit",
    params(AuditQuery), responses((status = 200, description = "Events, newest first", body = AuditEventsResponse)))]
pub(super) async fn list(
    Team { state, caller }: Team,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditEventsResponse>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.store.list_audit_events(caller.team_id, query.cluster_id, limit).await?;
    let audit_events = events
        .into_iter()
        .map(|e| AuditEventView {
            id: e.event_id,
            at: rfc3339(&e.at),
            token_id: e.token_id,
            action: e.action,
            cluster_id: e.cluster_id,
            object: e.object,
            status: e.status,
            request_id: e.request_id,
            detail: e.detail.and_then(|d| serde_json::from_str(&d).ok()),
        })
        .collect();
    Ok(Json(AuditEventsResponse { audit_events }))
}
