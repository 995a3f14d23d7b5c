//! `GET …/users/{name}/dependencies`: what depends on a user before it is deleted (what it
//! owns, the privileges it holds and set, its memberships), read live from the target and
//! naming only the cluster's own roles and databases. Read-only on the target and in the store.

use axum::extract::Path;
use axum::Json;
use std::collections::HashSet;

use pgplane_core::lifecycle::SyncStatus;
use pgplane_core::model::{Cluster, User};
use pgplane_target_server::dependencies::{role_dependencies, RoleDependencies};
use pgplane_target_server::TargetSpec;
use serde::Serialize;
use utoipa::ToSchema;

use super::super::read_from_registered_server;
use crate::error::ApiError;
use crate::extract::TeamCluster;
use crate::openapi::ReadsTarget;
use crate::state::AppState;

/// `{"dependencies": …}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DependenciesResponse {
    dependencies: RoleDependencies,
}

/// What depends on `name`, a user pgplane manages in `cluster` (404 for any other name: a user
/// not created yet, or in conflict with a role pgplane does not manage there, is another's),
/// read live, naming only the cluster's own roles and databases.
pub(crate) async fn dependencies_of(
    state: &AppState,
    cluster: &Cluster,
    name: &str,
) -> Result<RoleDependencies, ApiError> {
    if !on_server(&state.store.get_user(cluster.cluster_id, name).await?) {
        return Err(ApiError::not_found());
    }
    let spec = TargetSpec::of(cluster, &state.sealer).map_err(|_| ApiError::internal())?;
    let read = role_dependencies(&spec, state.prober.policy(), name).await;
    let mut report = read_from_registered_server(cluster, read, |r| &r.server_id)?;
    let (users, dbs) = state.store.cluster_objects(cluster.cluster_id).await?;
    let roles: HashSet<&str> = users
        .iter()
        .filter(|u| on_server(u))
        .map(|u| u.name.as_str())
        .chain([cluster.admin_user.as_str()])
        .collect();
    let databases: HashSet<&str> = dbs
        .iter()
        .filter(|d| d.claimed && d.sync_status != SyncStatus::Conflict)
        .map(|d| d.name.as_str())
        .chain([spec.admin_database()])
        .collect();
    report.keep_names_of(|r| roles.contains(r), |d| databases.contains(d));
    Ok(report)
}

/// Whether pgplane created or adopted the user on its cluster's server (a role found there under
/// the name of a user not created yet, or in conflict, is not the cluster's).
pub(super) fn on_server(user: &User) -> bool {
    user.claimed && user.sync_status != SyncStatus::Conflict
}

/// What a user owns on the target, per database (by kind, with counts and the first names),
/// the privileges it holds and the default privileges it set, and its memberships, read live
/// (read-only; one short session per database involved). What `DELETE …/users/{name}` would
/// hand to its heir.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/users/{username}/dependencies",
    operation_id = "pgplane_user_dependencies", tag = "Users",
    responses((status = 200, description = "What depends on the user", body = DependenciesResponse), ReadsTarget))]
pub(crate) async fn dependencies(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<DependenciesResponse>, ApiError> {
    Ok(Json(DependenciesResponse { dependencies: dependencies_of(&state, &cluster, &name).await? }))
}
