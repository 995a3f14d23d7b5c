//! `/v2/databases`: registering existing PostgreSQL servers as clusters, listing, showing and
//! unregistering them. Registration probes the target first (it must answer, and its admin
//! role must be able to manage roles and databases); nothing is stored when that fails.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgplane_core::lifecycle::{ClusterStatus, ObjectKind};
use pgplane_core::model::{Cluster, ServerIdentity};
use pgplane_core::names::{check_cluster_name, check_host, check_identifier, check_identifier_shape};
use pgplane_core::passwords::new_credentials;
use pgplane_core::store::{AdminConnection, NewCluster, TargetUpdate};
use pgplane_target_server::primary::count_foreign_grants;
use pgplane_target_server::SUPPORTED_SSLMODES;
use pgplane_target_server::{ServerFacts, TargetSpec};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

mod dry_run;

use super::firewall::{checked_rules, RuleBody};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::extract::{cluster_id, ApiJson, ApiQuery, Team, TeamCluster};
use crate::listing::ListingPermit;
use crate::openapi::ProbeErrors;
use crate::rendered::Shape;
use crate::state::AppState;
use crate::views::{users_json, ClusterResponse, ClusterView, ClustersResponse};
use dry_run::{dry_run, DryRun, RegisterQuery, Registration, RegistrationPreviewResponse};

/// `POST /v2/databases`: DigitalOcean's create-cluster body plus the `pgplane` block.
/// Unknown fields (godo sends several, some empty or null) are ignored.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateCluster {
    name: Option<String>,
    engine: Option<String>,
    version: Option<String>,
    region: Option<String>,
    size: Option<String>,
    num_nodes: Option<i32>,
    tags: Option<Vec<String>>,
    /// The cluster's first trusted sources (see `PUT …/firewall`).
    rules: Option<Vec<RuleBody>>,
    pgplane: Option<TargetInput>,
}

/// The target server and the admin connection pgplane uses to manage it.
#[derive(Deserialize, ToSchema)]
pub(super) struct TargetInput {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    sslmode: Option<String>,
    /// The database the admin connection uses (default `postgres`).
    database: Option<String>,
    /// PEM of the CA that signed the server's certificate (needed for `verify-full`).
    ca_certificate: Option<String>,
    /// Name of the cluster's primary user (default `doadmin`).
    primary_user: Option<String>,
    /// Name of the cluster's default database (default `defaultdb`).
    default_database: Option<String>,
    /// `PUT …/pgplane` only: confirms that the new connection leads to another server (a move,
    /// which needs a full-access token). Nothing on the new server counts as pgplane's until a
    /// pass creates or adopts it there.
    confirm_move: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only clusters carrying this tag.
    tag_name: Option<String>,
}

impl TargetInput {
    /// The admin connection this block describes, checked but not yet tried.
    fn connection(&self) -> Result<TargetSpec, ApiError> {
        let admin = AdminConnection {
            host: required(self.host.clone(), "pgplane.host")?,
            port: self.port.unwrap_or(5432),
            user: required(self.user.clone(), "pgplane.user")?,
            password: self.password.clone().unwrap_or_default(),
            database: self.database.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "postgres".into()),
            sslmode: self.sslmode.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "disable".into()),
            ca_certificate: self.ca_certificate.clone().filter(|c| !c.trim().is_empty()),
        };
        check_host(&admin.host).map_err(ApiError::unprocessable)?;
        if admin.port == 0 {
            return Err(ApiError::unprocessable("pgplane.port must be between 1 and 65535"));
        }
        check_identifier_shape("pgplane.user", &admin.user).map_err(ApiError::unprocessable)?;
        check_identifier_shape("pgplane.database", &admin.database).map_err(ApiError::unprocessable)?;
        if admin.password.contains('\0') {
            return Err(ApiError::unprocessable("pgplane.password must not contain NUL characters"));
        }
        if !SUPPORTED_SSLMODES.contains(&admin.sslmode.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "pgplane.sslmode {:?} is not supported; supported: {}",
                admin.sslmode,
                SUPPORTED_SSLMODES.join(", ")
            )));
        }
        Ok(TargetSpec::new(admin))
    }
}

/// The primary user and default database must not be what pgplane's admin connection uses.
fn check_roles_apart(spec: &TargetSpec, primary_user: &str, default_database: &str) -> Result<(), ApiError> {
    if primary_user == spec.admin.user {
        return Err(ApiError::unprocessable(
            "the primary user must not be the admin role pgplane connects as",
        ));
    }
    if default_database == spec.admin.database {
        return Err(ApiError::unprocessable(
            "the default database must not be the database pgplane's admin connection uses",
        ));
    }
    Ok(())
}

/// A move to another server needs full access (not only `database:update`) and the caller's
/// explicit confirmation.
fn check_move(caller: &Caller, confirmed: Option<bool>) -> Result<(), ApiError> {
    if !caller.has_full_access() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this connection leads to another server than the cluster's: moving a cluster needs a \
             full-access token",
        ));
    }
    if confirmed != Some(true) {
        return Err(ApiError::unprocessable(
            "this connection leads to another server than the cluster's; to move the cluster there, \
             send the request again with \"confirm_move\": true (nothing on the new server counts as \
             pgplane's until pgplane creates or adopts it there)",
        ));
    }
    Ok(())
}

/// Where the operator prefers it (`--adopted-primary-user=refuse`), refuses (409) to adopt a
/// primary user that has memberships pgplane did not grant (counted, never named: the roles
/// may be another team's); otherwise the pass that adopts it removes them.
async fn check_adoptable(state: &AppState, spec: &TargetSpec, primary_user: &str) -> Result<(), ApiError> {
    if !state.config.refuse_foreign_primary_user {
        return Ok(());
    }
    let counts = count_foreign_grants(spec, state.prober.policy(), primary_user)
        .await
        .map_err(|e| ApiError::unprocessable(format!("registration failed: {e}")))?;
    if counts.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "the primary user {primary_user:?} exists on the server with {} that pgplane did not \
         grant; this pgplane does not adopt such a role (--adopted-primary-user=refuse): remove \
         them, or choose another primary user; nothing was changed",
        counts.describe()
    )))
}

/// A text field that must be given and not empty.
fn required(value: Option<String>, what: &str) -> Result<String, ApiError> {
    crate::extract::required(value.filter(|v| !v.is_empty()), what)
}

/// Register an existing PostgreSQL server as a cluster; with `dry_run=true`, only say what
/// registering it would create, adopt or refuse there.
#[utoipa::path(post, path = "/v2/databases", operation_id = "databases_create_cluster", tag = "Databases", request_body = CreateCluster,
    params(RegisterQuery),
    responses((status = 201, description = "Registered; `status` is `online` once the primary user and default database exist", body = ClusterResponse),
        (status = 200, description = "`dry_run=true`: what registration would do; nothing was written", body = RegistrationPreviewResponse),
        (status = 409, description = "Another cluster on the same server (however it is addressed) already uses the primary user or default database, or (`--adopted-primary-user=refuse`) the primary user exists with memberships pgplane did not grant", body = ErrorBody),
        (status = 422, description = "Invalid request, or the target cannot be reached or managed", body = ErrorBody),
        ProbeErrors))]
pub(super) async fn create(
    Team { state, caller }: Team,
    note: AuditNote,
    DryRun(is_dry_run): DryRun,
    ApiJson(body): ApiJson<CreateCluster>,
) -> Result<Response, ApiError> {
    let name = note.new_name(body.name, "name", check_cluster_name)?;
    let engine = required(body.engine, "engine")?;
    if engine != "pg" {
        return Err(ApiError::unprocessable(format!(
            "engine {engine:?} is not supported: pgplane manages PostgreSQL (\"pg\") only"
        )));
    }
    let target = body.pgplane.ok_or_else(|| {
        ApiError::unprocessable(
            "invalid request: the pgplane block (host, port, user, password, sslmode of the target's admin connection) is required",
        )
    })?;
    let spec = target.connection()?;
    let primary_user = target.primary_user.filter(|u| !u.is_empty()).unwrap_or_else(|| "doadmin".into());
    let default_database =
        target.default_database.filter(|d| !d.is_empty()).unwrap_or_else(|| "defaultdb".into());
    check_identifier(ObjectKind::User, &primary_user).map_err(ApiError::unprocessable)?;
    check_identifier(ObjectKind::Database, &default_database).map_err(ApiError::unprocessable)?;
    check_roles_apart(&spec, &primary_user, &default_database)?;
    let rules = checked_rules(body.rules.unwrap_or_default())?;
    if is_dry_run {
        let version = body.version.as_deref().filter(|v| !v.is_empty());
        let r = Registration {
            name: &name,
            version,
            spec: &spec,
            primary_user: &primary_user,
            default_database: &default_database,
        };
        return Ok(Json(dry_run(&state, &caller, r).await?).into_response());
    }
    let facts = state.prober.probe(caller.team_id, &spec, "registration failed").await?;
    let major = ServerFacts::major(facts.version_num);
    if let Some(version) = body.version.filter(|v| !v.is_empty()) {
        if version != major {
            return Err(ApiError::unprocessable(format!(
                "version {version:?} was requested but the target runs PostgreSQL {major}"
            )));
        }
    }
    check_adoptable(&state, &spec, &primary_user).await?;

    let new = NewCluster {
        team_id: caller.team_id,
        name,
        primary_user,
        primary_credentials: new_credentials().await,
        default_database,
        admin: spec.admin.clone(),
        server_id: facts.server_id.clone(),
        server_version_num: facts.version_num,
        server_version: facts.version.clone(),
        region: body.region.filter(|r| !r.is_empty()).unwrap_or_else(|| "self-hosted".into()),
        size: body.size.filter(|s| !s.is_empty()).unwrap_or_else(|| "self-hosted".into()),
        num_nodes: body.num_nodes.filter(|n| *n > 0).unwrap_or(1),
        tags: body.tags.unwrap_or_default(),
        rules,
    };
    let cluster = state.store.insert_cluster(&new, &state.sealer).await?;
    let id = cluster.cluster_id;
    note.cluster(id);
    let store = &state.store;
    state
        .waiter
        .until(id, None, state.config.apply_timeout, || async move {
            let c = store.cluster_by_id(id).await?;
            Ok(c.filter(|c| c.status == ClusterStatus::Online || c.last_reconciled_at.is_some()).map(|_| ()))
        })
        .await?;
    let mut database = render(&state, &caller, &state.store.get_cluster(caller.team_id, id).await?).await?;
    database.pgplane.notices = facts.notices(&spec.admin.user);
    Ok((StatusCode::CREATED, Json(ClusterResponse { database })).into_response())
}

/// A cluster's answer to `caller`, read after the cluster: its users (kept rendered, see
/// `rendered`), its primary user's row (for the connection), its databases and trusted sources.
async fn render(state: &AppState, caller: &Caller, cluster: &Cluster) -> Result<ClusterView, ApiError> {
    let (store, id, reveal) = (&state.store, cluster.cluster_id, caller.sees_credentials());
    let users = state.rendered.get_or_render(Shape::InCluster, cluster, reveal, |now| async move {
        let users = store.list_users(id).await?;
        let passwords = reveal.then(|| state.credentials.of_cluster(id));
        users_json(&users, passwords, &cluster.primary_user, |_| None, now)
    });
    let primary = async {
        match store.get_user(id, &cluster.primary_user).await {
            Err(pgplane_core::Error::NotFound(_)) => Ok(None),
            found => found.map(Some).map_err(ApiError::from),
        }
    };
    let others =
        async { Ok::<_, ApiError>(tokio::try_join!(store.list_databases(id), store.firewall_rules(id))?) };
    let (users, primary, (dbs, rules)) = tokio::try_join!(users, primary, others)?;
    ClusterView::of(
        cluster,
        users.as_ref().to_owned(),
        primary.as_ref(),
        &dbs,
        &rules,
        &state.credentials,
        reveal,
    )
}

/// List the team's clusters.
#[utoipa::path(get, path = "/v2/databases", operation_id = "databases_list_clusters", tag = "Databases", params(ListQuery),
    responses((status = 200, description = "The clusters", body = ClustersResponse)))]
pub(super) async fn list(
    Team { state, caller }: Team,
    ApiQuery(query): ApiQuery<ListQuery>,
    _permit: ListingPermit,
) -> Result<Json<ClustersResponse>, ApiError> {
    let tag = query.tag_name.filter(|t| !t.is_empty());
    let clusters = state.store.list_clusters(caller.team_id, tag.as_deref()).await?;
    let mut databases = Vec::with_capacity(clusters.len());
    for cluster in &clusters {
        databases.push(render(&state, &caller, cluster).await?);
    }
    Ok(Json(ClustersResponse { databases }))
}

/// Show a cluster, with its users, databases and connection.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}", operation_id = "databases_get_cluster", tag = "Databases",
    responses((status = 200, description = "The cluster", body = ClusterResponse)))]
pub(super) async fn get(
    Team { state, caller }: Team,
    Path(raw_id): Path<String>,
    _permit: ListingPermit,
) -> Result<Json<ClusterResponse>, ApiError> {
    let cluster = state.store.get_cluster(caller.team_id, cluster_id(&raw_id)?).await?;
    let database = render(&state, &caller, &cluster).await?;
    Ok(Json(ClusterResponse { database }))
}

/// Unregister a cluster; nothing on the target is dropped.
#[utoipa::path(delete, path = "/v2/databases/{database_cluster_uuid}", operation_id = "databases_destroy_cluster", tag = "Databases",
    responses((status = 204, description = "Unregistered")))]
pub(super) async fn delete(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
) -> Result<StatusCode, ApiError> {
    state.store.delete_cluster(caller.team_id, cluster.cluster_id).await?;
    tracing::info!(cluster.id = %cluster.cluster_id, "cluster unregistered; nothing was dropped on the target");
    Ok(StatusCode::NO_CONTENT)
}

/// Update the admin connection of a cluster (for example after its password was changed on
/// the server). The new connection is tried first; nothing changes when it fails. A connection
/// that leads to another server (a different server identity) moves the cluster: that needs a
/// full-access token and `"confirm_move": true`.
#[utoipa::path(put, path = "/v2/databases/{database_cluster_uuid}/pgplane", operation_id = "pgplane_update_target",
    tag = "Databases", request_body = TargetInput,
    responses((status = 200, description = "Updated; the reconciler retries at once", body = ClusterResponse),
        (status = 403, description = "A move to another server needs a full-access token", body = ErrorBody),
        (status = 409, description = "Another cluster on the new server uses one of this cluster's names", body = ErrorBody),
        (status = 422, description = "Invalid, the target cannot be reached or managed that way, or a move was not confirmed", body = ErrorBody),
        ProbeErrors))]
pub(super) async fn update_target(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
    ApiJson(target): ApiJson<TargetInput>,
) -> Result<Json<ClusterResponse>, ApiError> {
    if target.primary_user.as_ref().is_some_and(|u| *u != cluster.primary_user)
        || target.default_database.as_ref().is_some_and(|d| *d != cluster.default_database)
    {
        return Err(ApiError::unprocessable(
            "the primary user and default database of a cluster cannot change",
        ));
    }
    let spec = target.connection()?;
    check_roles_apart(&spec, &cluster.primary_user, &cluster.default_database)?;
    let facts = state.prober.probe(caller.team_id, &spec, "update failed").await?;
    let moved = matches!(cluster.identify_server(&facts.server_id), ServerIdentity::Other { .. });
    if moved {
        check_move(&caller, target.confirm_move)?;
        check_adoptable(&state, &spec, &cluster.primary_user).await?;
        tracing::warn!(cluster.id = %cluster.cluster_id, "cluster moved to another server");
    }
    let update = TargetUpdate {
        admin: &spec.admin,
        server_version_num: facts.version_num,
        server_version: &facts.version,
        server_id: &facts.server_id,
    };
    state.store.update_target(&cluster, &update, moved, &state.sealer).await?;
    let id = cluster.cluster_id;
    let store = &state.store;
    let since = chrono::Utc::now();
    state
        .waiter
        .until(id, None, state.config.apply_timeout, || async move {
            let c = store.cluster_by_id(id).await?;
            Ok(c.filter(|c| c.last_reconciled_at.is_some_and(|at| at >= since)).map(|_| ()))
        })
        .await?;
    let cluster = state.store.get_cluster(caller.team_id, id).await?;
    Ok(Json(ClusterResponse { database: render(&state, &caller, &cluster).await? }))
}
