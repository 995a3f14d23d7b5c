//! `/v2/databases/{cluster}/pools`: connection pools, as DigitalOcean's (list, add, show,
//! replace, delete). A pool is served by the `pgplane pooler` beside the cluster's server, on
//! PgBouncer; the answer of a write does not wait for it (`status` says when it runs the pool).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use pgplane_core::model::{Cluster, Pool, PoolListener, PoolMode, PoolSpec};
use pgplane_core::names::{check_pool_name, pgbouncer_can_carry};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{required, ApiJson, TeamCluster};
use crate::state::AppState;
use crate::views::{PoolResponse, PoolView, PoolsResponse};

/// The largest `size` a request may ask for (the server's own limit is checked as well).
const MAX_SIZE: i32 = 10_000;

/// `POST …/pools`
#[derive(Deserialize, ToSchema)]
pub(super) struct CreatePool {
    /// 3 to 60 lowercase letters, digits, hyphens and underscores: the database clients connect
    /// to.
    #[schema(example = "backend-pool")]
    name: Option<String>,
    #[serde(flatten)]
    spec: PoolBody,
}

/// `PUT …/pools/{pool_name}`: the pool's mode, size, database and user, replaced.
#[derive(Deserialize, ToSchema)]
pub(super) struct PoolBody {
    /// `session`, `transaction` or `statement`.
    #[schema(example = "transaction")]
    mode: Option<String>,
    /// The most server connections the pool uses.
    #[schema(example = 10)]
    size: Option<i32>,
    /// The database of the cluster the pool leads to.
    #[schema(example = "defaultdb")]
    db: Option<String>,
    /// The user of the cluster the pool logs in as; absent or empty: each client's own.
    #[schema(example = "doadmin")]
    user: Option<String>,
}

impl PoolBody {
    /// The spec, checked: what is missing or malformed is a 422 naming it.
    fn spec(self) -> Result<PoolSpec, ApiError> {
        let mode = required(self.mode, "mode")?;
        let mode = PoolMode::parse(&mode).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "mode {mode:?} is invalid: use session, transaction or statement"
            ))
        })?;
        let size = required(self.size, "size")?;
        if !(1..=MAX_SIZE).contains(&size) {
            return Err(ApiError::unprocessable(format!("size {size} is invalid: use 1 to {MAX_SIZE}")));
        }
        let db = self.db.filter(|d| !d.is_empty());
        let database_name = required(db, "db")?;
        let user_name = self.user.filter(|u| !u.is_empty());
        for (what, name) in [("db", Some(&database_name)), ("user", user_name.as_ref())] {
            if let Some(name) = name.filter(|n| !pgbouncer_can_carry(n)) {
                return Err(ApiError::unprocessable(format!(
                    "{what} {name:?} cannot be served by a pool: PgBouncer's configuration cannot carry \
                     quotes, backslashes or spaces in names"
                )));
            }
        }
        Ok(PoolSpec { mode, size, database_name, user_name })
    }
}

/// List a cluster's connection pools.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/pools", operation_id = "databases_list_connectionPools", tag = "Pools",
    responses((status = 200, description = "The pools", body = PoolsResponse)))]
pub(super) async fn list(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
) -> Result<Json<PoolsResponse>, ApiError> {
    let pools = state.store.list_pools(cluster.cluster_id).await?;
    // One listener per cluster: read once for every pool.
    let listener = state.store.pool_listener(cluster.cluster_id).await?;
    let mut views = Vec::with_capacity(pools.len());
    for pool in &pools {
        views.push(view(&state, &caller, &cluster, listener.as_ref(), pool).await?);
    }
    Ok(Json(PoolsResponse { pools: views }))
}

/// Add a connection pool.
#[utoipa::path(post, path = "/v2/databases/{database_cluster_uuid}/pools", operation_id = "databases_add_connectionPool", tag = "Pools", request_body = CreatePool,
    responses((status = 201, description = "Created; `status` says when its pooler runs it", body = PoolResponse),
        (status = 409, description = "A pool of that name exists", body = ErrorBody),
        (status = 422, description = "Invalid name, mode, size, database or user; no pooler serves the cluster's server; or the server's pools would use more connections than it allows", body = ErrorBody)))]
pub(super) async fn create(
    TeamCluster { state, caller, cluster, note, .. }: TeamCluster,
    ApiJson(body): ApiJson<CreatePool>,
) -> Result<(StatusCode, Json<PoolResponse>), ApiError> {
    let name = note.new_name(body.name, "name", check_pool_name)?;
    let pool = state.store.create_pool(&cluster, &name, &body.spec.spec()?).await?;
    Ok((StatusCode::CREATED, Json(PoolResponse { pool: view_one(&state, &caller, &cluster, &pool).await? })))
}

/// Show a connection pool.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/pools/{pool_name}", operation_id = "databases_get_connectionPool", tag = "Pools",
    responses((status = 200, description = "The pool", body = PoolResponse)))]
pub(super) async fn get(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<PoolResponse>, ApiError> {
    let pool = state.store.get_pool(cluster.cluster_id, &name).await?;
    Ok(Json(PoolResponse { pool: view_one(&state, &caller, &cluster, &pool).await? }))
}

/// Replace a connection pool's mode, size, database and user.
#[utoipa::path(put, path = "/v2/databases/{database_cluster_uuid}/pools/{pool_name}", operation_id = "databases_update_connectionPool", tag = "Pools", request_body = PoolBody,
    responses((status = 204, description = "Changed; its pooler applies the change at once"),
        (status = 422, description = "Invalid mode, size, database or user, or too large for the server", body = ErrorBody)))]
pub(super) async fn update(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<PoolBody>,
) -> Result<StatusCode, ApiError> {
    state.store.update_pool(&cluster, &name, &body.spec()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a connection pool; its clients are disconnected.
#[utoipa::path(delete, path = "/v2/databases/{database_cluster_uuid}/pools/{pool_name}", operation_id = "databases_delete_connectionPool", tag = "Pools",
    responses((status = 204, description = "Deleted; its pooler stops serving it at once")))]
pub(super) async fn delete(
    TeamCluster { state, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_pool(cluster.cluster_id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One pool as the caller sees it, its cluster's listener read for it.
async fn view_one(
    state: &AppState,
    caller: &Caller,
    cluster: &Cluster,
    pool: &Pool,
) -> Result<PoolView, ApiError> {
    let listener = state.store.pool_listener(cluster.cluster_id).await?;
    view(state, caller, cluster, listener.as_ref(), pool).await
}

/// A pool as the caller sees it, at its cluster's listener. With a fixed user, its connection
/// logs in as that user's current login (its second one after a rotation with a grace), with
/// its password when the caller may see credentials.
async fn view(
    state: &AppState,
    caller: &Caller,
    cluster: &Cluster,
    listener: Option<&PoolListener>,
    pool: &Pool,
) -> Result<PoolView, ApiError> {
    let login = match &pool.user_name {
        None => None,
        Some(name) => match state.store.get_user(cluster.cluster_id, name).await {
            Ok(user) => {
                let password =
                    caller.sees_credentials().then(|| state.credentials.password(&user).ok()).flatten();
                Some((user.login().to_string(), password))
            }
            Err(_) => Some((name.clone(), None)),
        },
    };
    Ok(PoolView::of(pool, listener, login.as_ref().map(|(l, p)| (l.as_str(), p.as_deref()))))
}
