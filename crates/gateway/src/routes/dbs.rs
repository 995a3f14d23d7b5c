//! `/v2/databases/{cluster}/dbs`: list, add, show and delete databases. New databases are
//! owned by the cluster's primary user; the default database can never be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use pgplane_core::model::SyncStatus;
use pgplane_core::names::{check_identifier, NameKind};
use pgplane_core::store::ObjectKind;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{cluster_for, settle};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::views::DbView;

#[derive(Deserialize)]
pub(super) struct CreateDb {
    name: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_for(&state, &caller, &raw_id).await?;
    let dbs = state.store.list_databases(cluster.cluster_id).await?;
    Ok(Json(
        json!({ "dbs": dbs.iter().map(DbView::of).collect::<Vec<_>>() }),
    ))
}

pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw_id): Path<String>,
    ApiJson(body): ApiJson<CreateDb>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let cluster = cluster_for(&state, &caller, &raw_id).await?;
    let name = body
        .name
        .ok_or_else(|| ApiError::unprocessable("invalid request: name field required"))?;
    check_identifier(NameKind::Database, &name).map_err(ApiError::unprocessable)?;
    if name == cluster.admin_database {
        return Err(ApiError::unprocessable(format!(
            "database name {name:?} is reserved: pgplane's admin connection uses it"
        )));
    }
    let written = state
        .store
        .insert_database(cluster.cluster_id, &name)
        .await?;
    let store = &state.store;
    let id = cluster.cluster_id;
    let db = settle(&state, id, written.generation, written.updated_at, || {
        store.get_database(id, &name)
    })
    .await?
    .ok_or_else(ApiError::not_found)?;
    if db.sync() == SyncStatus::Conflict
        && state
            .store
            .forget_unclaimed(ObjectKind::Database, id, &name, db.generation)
            .await?
    {
        return Err(ApiError::conflict(db.last_error.unwrap_or_default()));
    }
    Ok((StatusCode::CREATED, Json(json!({ "db": DbView::of(&db) }))))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((raw_id, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_for(&state, &caller, &raw_id).await?;
    let db = state.store.get_database(cluster.cluster_id, &name).await?;
    Ok(Json(json!({ "db": DbView::of(&db) })))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((raw_id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let cluster = cluster_for(&state, &caller, &raw_id).await?;
    let db = state.store.get_database(cluster.cluster_id, &name).await?;
    if db.is_default {
        return Err(ApiError::unprocessable(format!(
            "cannot delete the default database {name:?}: every cluster keeps its default database"
        )));
    }
    let generation = state
        .store
        .request_deletion(ObjectKind::Database, cluster.cluster_id, &name)
        .await?;
    let written_at = chrono::Utc::now();
    let store = &state.store;
    let id = cluster.cluster_id;
    settle(&state, id, generation, written_at, || {
        store.get_database(id, &name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
