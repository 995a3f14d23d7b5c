//! Looking at a cluster beyond DigitalOcean's API (pgplane extensions): the drift the
//! reconciler found and repaired, the roles and databases on the target that pgplane does not
//! manage (listed, never touched), and what the reconciler would do there right now (the plan).
//! All read-only on the target and in the store.

use std::collections::HashSet;

use axum::Json;
use pgplane_target_server::{list_roles_and_databases, TargetSpec};
use serde::Serialize;
use utoipa::ToSchema;

use super::{read_from_registered_server, unavailable};
use crate::error::ApiError;
use crate::extract::TeamCluster;
use crate::openapi::ReadsTarget;
use crate::views::rfc3339;
use pgplane_core::access::is_group;
use pgplane_target_server::plan::Plan;

/// One change found on the target behind pgplane's back.
#[derive(Serialize, ToSchema)]
pub(crate) struct DriftView {
    /// `user` or `database`.
    kind: String,
    name: String,
    /// What was found, e.g. "the role was missing on the target", "CREATEDB was granted".
    description: String,
    found_at: String,
    /// When pgplane put it back (absent while not repaired yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    repaired_at: Option<String>,
}

/// `{"drift_events": [...]}`, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct DriftResponse {
    drift_events: Vec<DriftView>,
}

/// Drift found on a cluster's target and when it was repaired (newest first, at most 200).
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/drift", operation_id = "pgplane_list_drift",
    tag = "Databases", responses((status = 200, description = "Drift events", body = DriftResponse)))]
pub(super) async fn drift(
    TeamCluster { state, cluster, .. }: TeamCluster,
) -> Result<Json<DriftResponse>, ApiError> {
    let events = state.store.list_drift(cluster.cluster_id, 200).await?;
    let drift_events = events
        .into_iter()
        .map(|e| DriftView {
            kind: e.kind,
            name: e.name,
            description: e.description,
            found_at: rfc3339(&e.found_at),
            repaired_at: e.repaired_at.as_ref().map(rfc3339),
        })
        .collect();
    Ok(Json(DriftResponse { drift_events }))
}

/// Roles and databases on the target that no cluster of pgplane manages (other clusters on the
/// same server, the roles they log in as and every access group role are left out: their
/// names are not this team's).
#[derive(Serialize, ToSchema)]
pub(crate) struct UnmanagedResponse {
    /// Roles (PostgreSQL's own `pg_*` roles aside), including the admin role pgplane uses.
    roles: Vec<String>,
    /// Databases (templates aside).
    databases: Vec<String>,
}

/// What exists on the target without being managed by pgplane, read live; pgplane never alters
/// or drops any of it.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/unmanaged", operation_id = "pgplane_list_unmanaged",
    tag = "Databases", responses((status = 200, description = "Unmanaged roles and databases", body = UnmanagedResponse), ReadsTarget))]
pub(super) async fn unmanaged(
    TeamCluster { state, cluster, .. }: TeamCluster,
) -> Result<Json<UnmanagedResponse>, ApiError> {
    let spec = TargetSpec::of(&cluster, &state.sealer).map_err(|_| ApiError::internal())?;
    let read = list_roles_and_databases(&spec, state.prober.policy()).await;
    let (server_id, roles, databases) = read_from_registered_server(&cluster, read, |(id, ..)| id)?;
    let (users, dbs) = state.store.cluster_objects(cluster.cluster_id).await?;
    let (other_roles, other_dbs) =
        state.store.names_of_other_clusters(&server_id, cluster.cluster_id).await?;
    // Ours (created or adopted on this server) are managed; the other clusters' are theirs, by
    // name or by who holds them (a role another tenant made, a database it owns). An admin role
    // this cluster shares with others holds nothing of theirs.
    let holders: Vec<String> = other_roles.iter().filter(|r| **r != cluster.admin_user).cloned().collect();
    let ours =
        |objects: Vec<&'_ str>| -> HashSet<String> { objects.into_iter().map(str::to_string).collect() };
    let our_roles = ours(users.iter().filter(|u| u.claimed).map(|u| u.name.as_str()).collect());
    let our_dbs = ours(dbs.iter().filter(|d| d.claimed).map(|d| d.name.as_str()).collect());
    Ok(Json(UnmanagedResponse {
        roles: roles
            .into_iter()
            .filter(|r| {
                !our_roles.contains(&r.name) && !r.is_theirs(&other_roles, &holders) && !is_group(&r.name)
            })
            .map(|r| r.name)
            .collect(),
        databases: databases
            .into_iter()
            .filter(|d| !our_dbs.contains(&d.name) && !d.is_theirs(&other_dbs, &holders))
            .map(|d| d.name)
            .collect(),
    }))
}

/// `{"plan": …}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PlanResponse {
    plan: Plan,
}

/// What the reconciler would do on the cluster's target right now: a full pass, observed
/// live, phase by phase (roles, databases, access levels, roles to drop) with the SQL each
/// step would send (password verifiers read `'<redacted>'`), drift it would repair marked.
/// Read-only: nothing is sent but the pass's catalog reads.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/plan", operation_id = "pgplane_plan",
    tag = "Databases", responses((status = 200, description = "The plan", body = PlanResponse), ReadsTarget))]
pub(super) async fn plan(
    TeamCluster { state, cluster, .. }: TeamCluster,
) -> Result<Json<PlanResponse>, ApiError> {
    let planner =
        state.config.planner.clone().ok_or_else(|| {
            unavailable("this pgplane process cannot plan (it was started without one)".into())
        })?;
    let plan = planner
        .plan(&cluster)
        .await
        .map_err(|e| unavailable(format!("the target cannot be planned for: {e}")))?;
    Ok(Json(PlanResponse { plan }))
}
