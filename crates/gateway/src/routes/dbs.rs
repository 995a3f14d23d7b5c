//! `/v2/databases/{cluster}/dbs`: list, add, show and delete databases. New databases are
//! owned by the cluster's primary user; the default database can never be deleted.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use pgplane_core::lifecycle::ObjectKind;
use pgplane_core::names::check_identifier;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::extract::{ApiJson, TeamCluster};
use crate::views::{DbResponse, DbView, DbsResponse};
use crate::wait::{settle_create, settle_delete};

/// `POST .../dbs`
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateDb {
    /// The database's name.
    name: Option<String>,
}

/// List a cluster's databases.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/dbs", operation_id = "databases_list", tag = "Dbs",
    responses((status = 200, description = "The databases", body = DbsResponse)))]
pub(super) async fn list(
    TeamCluster { state, cluster, .. }: TeamCluster,
) -> Result<Json<DbsResponse>, ApiError> {
    let dbs = state.store.list_databases(cluster.cluster_id).await?;
    Ok(Json(DbsResponse { dbs: dbs.iter().map(DbView::of).collect() }))
}

/// Add a database owned by the primary user.
#[utoipa::path(post, path = "/v2/databases/{database_cluster_uuid}/dbs", operation_id = "databases_add", tag = "Dbs", request_body = CreateDb,
    responses((status = 201, description = "Created", body = DbResponse),
        (status = 409, description = "A database of that name exists on the target and is not managed by pgplane", body = ErrorBody),
        (status = 422, description = "Invalid, reserved or duplicate name", body = ErrorBody)))]
pub(super) async fn create(
    TeamCluster { state, cluster, note, .. }: TeamCluster,
    ApiJson(body): ApiJson<CreateDb>,
) -> Result<(StatusCode, Json<DbResponse>), ApiError> {
    let name = note.new_name(body.name, "name", |n| check_identifier(ObjectKind::Database, n))?;
    if name == cluster.admin_database {
        return Err(ApiError::unprocessable(format!(
            "database name {name:?} is reserved: pgplane's admin connection uses it"
        )));
    }
    let written = state.store.insert_database(cluster.cluster_id, &name).await?;
    let (store, id) = (&state.store, cluster.cluster_id);
    let db =
        settle_create(&state, ObjectKind::Database, &written, &name, id, || store.get_database(id, &name))
            .await?;
    Ok((StatusCode::CREATED, Json(DbResponse { db: DbView::of(&db) })))
}

/// Show a database.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/dbs/{database_name}", operation_id = "databases_get", tag = "Dbs",
    responses((status = 200, description = "The database", body = DbResponse)))]
pub(super) async fn get(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<DbResponse>, ApiError> {
    let db = state.store.get_database(cluster.cluster_id, &name).await?;
    Ok(Json(DbResponse { db: DbView::of(&db) }))
}

/// Delete a database, ending the sessions connected to it.
#[utoipa::path(delete, path = "/v2/databases/{database_cluster_uuid}/dbs/{database_name}", operation_id = "databases_delete", tag = "Dbs",
    responses((status = 204, description = "Deleted (or deletion pending while the target is unreachable)"),
        (status = 422, description = "The default database cannot be deleted", body = ErrorBody)))]
pub(super) async fn delete(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let db = state.store.get_database(cluster.cluster_id, &name).await?;
    if db.is_default {
        return Err(ApiError::unprocessable(format!(
            "cannot delete the default database {name:?}: every cluster keeps its default database"
        )));
    }
    let (store, id) = (&state.store, cluster.cluster_id);
    settle_delete(&state, ObjectKind::Database, id, &name, || store.get_database(id, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
