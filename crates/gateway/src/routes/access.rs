//! `/v2/databases/{cluster}/users/{name}/access` (a pgplane extension): the access levels a
//! user holds per database of its cluster (`read_only`, `read_write`; none is no entry),
//! read and replaced as a whole. The primary user owns every database: its access is shown as
//! `owner` and cannot be changed. A change waits, like any other write, until the reconciler
//! has carried it out on the target (or the apply timeout passes: then `pending`). An entry
//! whose group role's name is held by a role pgplane did not create shows `status: conflict`.

use std::collections::BTreeSet;

use axum::extract::Path;
use axum::Json;
use pgplane_core::access::AccessLevel;
use pgplane_core::lifecycle::{DesiredState, Lifecycle};
use pgplane_core::model::{AccessGrant, AccessProgress, Cluster, Database, User};
use serde::{Deserialize, Serialize};

pub(crate) use crate::views::AccessEntry;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{required, ApiJson, TeamCluster};
use crate::openapi::ChangesUser;
use crate::state::AppState;
use crate::wait::settle;

/// The level the primary user is shown with on every database (it owns them).
const OWNER: &str = "owner";

/// `PUT …/access`: the user's levels, replacing all it had.
#[derive(Deserialize, ToSchema)]
pub(super) struct PutAccess {
    access: Option<Vec<AccessEntry>>,
}

/// A user's levels and whether the target has them yet.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccessResponse {
    access: Vec<AccessEntry>,
    /// `ready` (carried out on the target) or `pending` (see `last_error`).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// The entries of `user`: its stored levels, or `owner` on every present database for the
/// primary user.
pub(crate) fn entries_of(user: &User, grants: &[AccessGrant], databases: &[Database]) -> Vec<AccessEntry> {
    if user.is_primary() {
        return databases
            .iter()
            .filter(|d| d.desired() == DesiredState::Present)
            .map(|d| AccessEntry::new(d.name.clone(), OWNER.to_string()))
            .collect();
    }
    grants
        .iter()
        .filter(|g| g.user_name == user.name)
        .map(|g| AccessEntry::new(g.database_name.clone(), g.level.clone()))
        .collect()
}

/// Checks requested entries: known levels (`none` drops the entry), each database at most
/// once. Databases are checked by the store (they must be present ones of the cluster).
pub(crate) fn parse_entries(entries: &[AccessEntry]) -> Result<Vec<(String, AccessLevel)>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut levels = Vec::new();
    for entry in entries {
        if !seen.insert(entry.database.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "database {:?} is listed more than once",
                entry.database
            )));
        }
        match AccessLevel::parse(&entry.level) {
            Some(level) => levels.push((entry.database.clone(), level)),
            None if entry.level == "none" => {}
            None => {
                return Err(ApiError::unprocessable(format!(
                    "unknown access level {:?}: use read_only, read_write or none",
                    entry.level
                )))
            }
        }
    }
    Ok(levels)
}

/// Answers with a user's levels as they are now.
async fn answer(state: &AppState, cluster: &Cluster, user: &User) -> Result<Json<AccessResponse>, ApiError> {
    let id = cluster.cluster_id;
    let (grants, databases, progress, conflicts) = tokio::try_join!(
        state.store.list_access(id, Some(&user.name)),
        async {
            if user.is_primary() {
                state.store.list_databases(id).await
            } else {
                Ok(Vec::new())
            }
        },
        state.store.access_progress(id, &user.name),
        state.store.access_group_conflicts(id),
    )?;
    let mut access = entries_of(user, &grants, &databases);
    for entry in &mut access {
        let found = conflicts.iter().find(|(d, l, _)| *d == entry.database && *l == entry.level);
        if let Some((_, _, why)) = found {
            entry.status = Some("conflict".into());
            entry.last_error = Some(why.clone());
        }
    }
    Ok(Json(AccessResponse { access, status: progress.sync().as_str(), last_error: progress.access_error }))
}

/// Show the access levels a user holds per database (pgplane extension).
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/users/{username}/access", operation_id = "databases_get_user_access", tag = "Users",
    responses((status = 200, description = "The user's levels", body = AccessResponse)))]
pub(super) async fn get(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<AccessResponse>, ApiError> {
    let user = state.store.get_user(cluster.cluster_id, &name).await?;
    answer(&state, &cluster, &user).await
}

/// Replace the access levels a user holds per database (pgplane extension); databases left
/// out lose the user's access. Answers once the target has them (or `pending`).
#[utoipa::path(put, path = "/v2/databases/{database_cluster_uuid}/users/{username}/access", operation_id = "databases_update_user_access", tag = "Users", request_body = PutAccess,
    responses((status = 200, description = "The user's levels (status `pending` with `last_error` if the target could not be reached in time)", body = AccessResponse),
        ChangesUser,
        (status = 422, description = "Missing `access`, an unknown level or database, a database listed twice, or the primary user", body = ErrorBody)))]
pub(super) async fn put(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutAccess>,
) -> Result<Json<AccessResponse>, ApiError> {
    let entries = required(body.access, "access")?;
    let levels = parse_entries(&entries)?;
    let written = state.store.replace_access(cluster.cluster_id, &name, &levels).await?;
    settle_access(&state, &cluster, &written).await?;
    let user = state.store.get_user(cluster.cluster_id, &name).await?;
    answer(&state, &cluster, &user).await
}

/// Waits for a change of a user's levels to be carried out (or to fail, or the apply timeout).
pub(super) async fn settle_access(
    state: &AppState,
    cluster: &Cluster,
    written: &AccessProgress,
) -> Result<(), ApiError> {
    if written.access_applied_generation >= written.access_generation {
        return Ok(());
    }
    let (store, id, name) = (&state.store, cluster.cluster_id, written.name.as_str());
    settle(state, id, written.access_generation, written.updated_at, || store.access_progress(id, name))
        .await?;
    Ok(())
}
