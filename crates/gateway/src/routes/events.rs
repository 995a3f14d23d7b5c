//! `GET /v2/databases/{cluster}/events`: the cluster's event log, as DigitalOcean's (`id`,
//! `cluster_name`, `event_type`, `create_time`), from pgplane's own records: the changes made
//! through the API (users, databases, pools and trusted sources created, changed and deleted,
//! passwords reset) and drift found and repaired on the target or in its pools. `event_type`
//! keeps to the values DigitalOcean documents (`cluster_create`, `cluster_update`), which typed
//! clients may hold as an enum; what happened, and to what, is in the event's `pgplane` block.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::TeamCluster;
use crate::views::rfc3339;

/// How many events an answer holds at most (the newest).
const LIMIT: i64 = 1000;

/// One event.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventView {
    id: String,
    cluster_name: String,
    /// `cluster_create` (the registration) or `cluster_update` (everything after it).
    #[schema(example = "cluster_update")]
    event_type: &'static str,
    create_time: String,
    pgplane: EventDetail,
}

/// What happened, and to what (pgplane extension).
#[derive(Serialize, ToSchema)]
pub(crate) struct EventDetail {
    /// `cluster_register`, `user_create`, `user_reset_auth`, `database_delete`, `pool_create`,
    /// `firewall_update`, `user_drift_repaired`, `pool_drift_repaired`, ...
    #[schema(example = "user_create")]
    action: String,
    /// The user, database or pool, when the event is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<String>,
}

/// `{"events": [...]}`
#[derive(Serialize, ToSchema)]
pub(crate) struct EventsResponse {
    events: Vec<EventView>,
}

/// List a cluster's events, newest first.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/events", operation_id = "databases_list_events_logs", tag = "Databases",
    responses((status = 200, description = "The events, newest first (at most 1000)", body = EventsResponse)))]
pub(super) async fn list(
    TeamCluster { state, cluster, .. }: TeamCluster,
) -> Result<Json<EventsResponse>, ApiError> {
    let events = state.store.cluster_events(cluster.cluster_id, LIMIT).await?;
    let events = events
        .into_iter()
        .map(|e| EventView {
            id: e.id,
            cluster_name: cluster.name.clone(),
            event_type: if e.action == "cluster_register" { "cluster_create" } else { "cluster_update" },
            create_time: rfc3339(&e.at),
            pgplane: EventDetail { action: e.action, object: e.object },
        })
        .collect();
    Ok(Json(EventsResponse { events }))
}
