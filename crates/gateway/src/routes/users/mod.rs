//! `/v2/databases/{cluster}/users`: list, add, show, update settings, reset password and
//! delete users. The primary user can be shown and have its password reset, never deleted.
//! New users get LOGIN and nothing else (REPLICATION only when asked for), plus the access
//! levels asked for at creation (`access`, a pgplane extension; see `access.rs`). What depends
//! on a user (`dependencies.rs`), the checks of its deletion (`deletion.rs`), and expiries and
//! leases (`leases.rs`) are beside it.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use pgplane_core::access::check_levels;
use pgplane_core::lifecycle::{DesiredState, Lifecycle, ObjectKind};
use pgplane_core::model::{Cluster, Database, Lease, SettingsChange, User, UserSettings};
use pgplane_core::names::check_identifier;
use pgplane_core::parameters::{
    check_connection_limit, check_parameters, RoleParameter, NO_CONNECTION_LIMIT,
};
use pgplane_core::passwords::new_credentials;
use pgplane_core::powers::replication_refusal;
use pgplane_core::scopes::Scope;
use pgplane_core::store::Heir;
use pgplane_target_server::TargetSpec;
use serde::Deserialize;
use utoipa::ToSchema;

pub(super) mod deletion;
pub(super) mod dependencies;
pub(super) mod leases;

use super::access::{entries_of, parse_entries, settle_access, AccessEntry};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::extract::{cluster_id, required, ApiJson, ApiQuery, Team, TeamCluster};
use crate::listing::ListingPermit;
use crate::openapi::ChangesUser;
use crate::rendered::{http_body, Rendering, Shape};
use crate::state::AppState;
use crate::views::{users_json, ParameterView, UserResponse, UserView, UsersResponse};
use crate::wait::{settle, settle_create};
use deletion::{check_heir, check_user_deletion, DeleteUserQuery};
use leases::{checked_expiry, lifetime, ListUsersQuery};

/// PostgreSQL user settings.
#[derive(Deserialize, Default, ToSchema)]
pub(super) struct Settings {
    /// Give the user the REPLICATION attribute (default false), which reads the whole server:
    /// refused (422) unless the operator allows it and the cluster is alone on its server.
    pg_allow_replication: Option<bool>,
    /// How many connections the user may hold at once; -1 for no limit (pgplane extension).
    /// Omitted in an update: unchanged.
    #[schema(example = 20)]
    connection_limit: Option<i32>,
    /// Session parameters set at each of the user's logins, in every database or in one
    /// database of the cluster (pgplane extension): `statement_timeout`, `lock_timeout`,
    /// `idle_in_transaction_session_timeout`, `idle_session_timeout` (a time: `30s`, `500ms`,
    /// `5min`, a number of milliseconds), `work_mem` (memory: `64MB`, a number of kB),
    /// `search_path` (schema names, separated by commas), `default_transaction_read_only`
    /// (`on` or `off`). Omitted in an update: unchanged; `[]` removes them all.
    parameters: Option<Vec<ParameterView>>,
    /// When the server stops accepting the user's logins (RFC 3339, to the second); pgplane
    /// then ends its sessions and shows it `expired` (pgplane extension). Not for the primary
    /// user, nor a lease (see `ttl`). Omitted in an update: unchanged; `null`: never expires.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-01-31T18:00:00Z")]
    valid_until: Option<Option<DateTime<Utc>>>,
}

/// Deserialises a field that is present (`null` included) as `Some`, so that an omitted field
/// (None, by `default`) is told from one set to `null` (`Some(None)`).
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl Settings {
    /// The connection limit and parameters, checked against the cluster's present
    /// `databases` (422 saying what is wrong).
    fn checked_extensions(
        &self,
        databases: &[Database],
    ) -> Result<(Option<i32>, Option<Vec<RoleParameter>>), ApiError> {
        if let Some(limit) = self.connection_limit {
            check_connection_limit(limit).map_err(ApiError::unprocessable)?;
        }
        let present: Vec<&str> = databases
            .iter()
            .filter(|d| d.desired() == DesiredState::Present)
            .map(|d| d.name.as_str())
            .collect();
        let parameters = match &self.parameters {
            None => None,
            Some(given) => {
                let given: Vec<RoleParameter> = given.iter().cloned().map(RoleParameter::from).collect();
                Some(check_parameters(&given, &present).map_err(ApiError::unprocessable)?)
            }
        };
        Ok((self.connection_limit, parameters))
    }
}

/// `POST .../users`. MySQL, Kafka and MongoDB fields that DigitalOcean also accepts are
/// ignored.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateUser {
    name: Option<String>,
    settings: Option<Settings>,
    /// Access levels per database to start with (pgplane extension; as in `PUT …/access`).
    access: Option<Vec<AccessEntry>>,
    /// Makes the user a lease that ends this long after its creation (`15m`, `2h`, `7d`; at
    /// most 366 days), unless renewed: its logins stop, its sessions end, and it is deleted,
    /// what it owns going to `reassign_to` (pgplane extension).
    #[schema(example = "15m")]
    ttl: Option<String>,
    /// A lease's heir: the user that inherits what it owns when it ends (default the primary
    /// user); only with `ttl`. Needs `database:update` as well.
    reassign_to: Option<String>,
}

/// `PUT .../users/{name}`: `settings` is required; an omitted `pg_allow_replication` means
/// false, as on DigitalOcean; omitted pgplane extensions stay as they are.
#[derive(Deserialize, ToSchema)]
pub(super) struct UpdateUser {
    settings: Option<Settings>,
}

/// Answers with one user, with its access levels.
async fn one(
    user: &User,
    state: &AppState,
    caller: &Caller,
    cluster: &Cluster,
) -> Result<Json<UserResponse>, ApiError> {
    let id = cluster.cluster_id;
    // A user whose levels never changed has none to read.
    let grants = async {
        match user.access_generation {
            0 => Ok(Vec::new()),
            _ => state.store.list_access(id, Some(&user.name)).await,
        }
    };
    let (grants, databases) = tokio::try_join!(grants, async {
        if user.is_primary() {
            state.store.list_databases(id).await
        } else {
            Ok(Vec::new())
        }
    })?;
    let mut passwords = caller.sees_credentials().then(|| state.credentials.of_cluster(id));
    let mut view = UserView::of(user, passwords.as_mut(), &cluster.primary_user);
    view.access = Some(entries_of(user, &grants, &databases));
    Ok(Json(UserResponse { user: view }))
}

/// Refuses (422) a request for REPLICATION unless the operator allows it and the cluster is
/// alone on its server (see [`replication_refusal`]), and, asking the server, unless the
/// cluster's admin role may give it (a superuser, or from PostgreSQL 16 a role that has it).
async fn check_replication(state: &AppState, cluster: &Cluster, wanted: bool) -> Result<(), ApiError> {
    if !wanted {
        return Ok(());
    }
    let alone = state.store.alone_on_server(cluster).await?;
    if let Some(why) = replication_refusal(state.config.allow_replication_for_sole_tenants, alone) {
        return Err(ApiError::unprocessable(why));
    }
    let spec = TargetSpec::of(cluster, &state.sealer).map_err(|_| ApiError::internal())?;
    let facts = state.prober.probe(cluster.team_id, &spec, "checking the admin role failed").await?;
    if !facts.can_grant_replication {
        return Err(ApiError::unprocessable(format!(
            "pg_allow_replication cannot be given on this server: the cluster's admin role {:?} may not \
             give REPLICATION (a superuser can, or from PostgreSQL 16 a role that has it)",
            cluster.admin_user
        )));
    }
    Ok(())
}

/// Seals fresh credentials for `name` on `cluster`.
async fn sealed_credentials(state: &AppState, cluster: &Cluster, name: &str) -> Vec<u8> {
    let credentials = new_credentials().await;
    let json = serde_json::to_vec(&credentials).expect("credentials serialise");
    state.sealer.seal(&json, &User::credentials_context(cluster.cluster_id, name))
}

/// Waits for a user write to settle and answers with the user as it is then.
async fn settled_user(state: &AppState, cluster: &Cluster, written: &User) -> Result<Option<User>, ApiError> {
    let store = &state.store;
    let (id, name) = (cluster.cluster_id, written.name.as_str());
    settle(state, id, written.generation, written.updated_at, || store.get_user_batched(id, name)).await
}

/// List a cluster's users, with their passwords.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/users", operation_id = "databases_list_users", tag = "Users",
    params(ListUsersQuery), responses((status = 200, description = "The users", body = UsersResponse)))]
pub(super) async fn list(
    Team { state, caller }: Team,
    Path(raw_id): Path<String>,
    _permit: ListingPermit,
    ApiQuery(query): ApiQuery<ListUsersQuery>,
) -> Result<Response, ApiError> {
    let horizon = query.horizon()?;
    let store = &state.store;
    // The cluster (and its listing version) first, then its rows: see `rendered`.
    let cluster = store.get_cluster(caller.team_id, cluster_id(&raw_id)?).await?;
    let (id, reveal, primary_user) = (cluster.cluster_id, caller.sees_credentials(), &cluster.primary_user);
    let render = |now| async move {
        let (users, grants, databases) =
            tokio::try_join!(store.list_users(id), store.list_access(id, None), store.list_databases(id))?;
        let shown = users.iter().filter(|u| horizon.is_none_or(|h| u.valid_until.is_some_and(|t| t <= h)));
        let passwords = reveal.then(|| state.credentials.of_cluster(id));
        let access = |u: &User| Some(entries_of(u, &grants, &databases));
        let Rendering { body: users, fresh_until } = users_json(shown, passwords, primary_user, access, now)?;
        let body =
            serde_json::value::to_raw_value(&Listed { users: &users }).map_err(|_| ApiError::internal())?;
        Ok(Rendering { body, fresh_until })
    };
    let body = match horizon {
        None => state.rendered.get_or_render(Shape::Listing, &cluster, reveal, render).await?,
        // A listing narrowed by expiry is not kept.
        Some(_) => render(Utc::now()).await?.body.into(),
    };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], http_body(body))
        .into_response())
}

/// `{"users": [...]}` around users rendered already (the shape of [`UsersResponse`]).
#[derive(serde::Serialize)]
struct Listed<'a> {
    users: &'a serde_json::value::RawValue,
}

/// What makes a new user a lease (`ttl`, and its heir), or the expiry it is given, checked.
async fn lease_of(
    state: &AppState,
    caller: &Caller,
    cluster: &Cluster,
    name: &str,
    ttl: &Option<String>,
    heir: Option<String>,
    settings: &Settings,
) -> Result<(Option<Lease>, Option<DateTime<Utc>>), ApiError> {
    let expiry = settings.valid_until.flatten();
    let Some(ttl) = ttl else {
        if heir.is_some() {
            return Err(ApiError::unprocessable(
                "reassign_to is given at creation only to a lease (with ttl)",
            ));
        }
        return Ok((None, expiry.map(|t| checked_expiry(None, t)).transpose()?));
    };
    if expiry.is_some() {
        return Err(ApiError::unprocessable("a lease ends after its ttl: give ttl or valid_until, not both"));
    }
    let ttl = lifetime("ttl", ttl)?;
    let heir = heir.filter(|h| !h.is_empty() && *h != cluster.primary_user);
    if let Some(heir) = &heir {
        if !caller.can(Scope::Update) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "naming a lease's heir (reassign_to) needs the database:update scope",
            ));
        }
        check_heir(state, cluster, name, heir).await?;
    }
    let seconds = i32::try_from(ttl.as_secs()).expect("at most a year");
    let ends = Utc::now() + chrono::Duration::seconds(seconds.into());
    Ok((Some(Lease { seconds, heir }), Some(ends)))
}

/// Add a user with LOGIN and nothing else, and a generated password.
#[utoipa::path(post, path = "/v2/databases/{database_cluster_uuid}/users", operation_id = "databases_add_user", tag = "Users", request_body = CreateUser,
    responses((status = 201, description = "Created (or pending, with `last_error`, if the target could not be reached in time)", body = UserResponse),
        (status = 409, description = "A role of that name exists on the target and is not managed by pgplane", body = ErrorBody),
        (status = 422, description = "Invalid, reserved or duplicate name, an invalid connection limit, parameter, expiry or ttl, an heir that may not inherit, or REPLICATION where it is not allowed", body = ErrorBody)))]
pub(super) async fn create(
    TeamCluster { state, caller, cluster, note, .. }: TeamCluster,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let name = note.new_name(body.name, "user_name", |n| check_identifier(ObjectKind::User, n))?;
    if name == cluster.admin_user {
        return Err(ApiError::unprocessable(format!(
            "user name {name:?} is reserved: it is the admin role pgplane manages this cluster with"
        )));
    }
    let settings = body.settings.unwrap_or_default();
    let replication = settings.pg_allow_replication.unwrap_or(false);
    check_replication(&state, &cluster, replication).await?;
    let (lease, valid_until) =
        lease_of(&state, &caller, &cluster, &name, &body.ttl, body.reassign_to, &settings).await?;
    let levels = parse_entries(body.access.as_deref().unwrap_or_default())?;
    let (store, id) = (&state.store, cluster.cluster_id);
    // Unknown databases are refused before the user is stored (read only when some are named).
    let databases = if levels.is_empty() && settings.parameters.is_none() {
        Vec::new()
    } else {
        store.list_databases(id).await?
    };
    let (connection_limit, parameters) = settings.checked_extensions(&databases)?;
    let settings = UserSettings {
        allow_replication: replication,
        connection_limit: connection_limit.unwrap_or(NO_CONNECTION_LIMIT),
        parameters: parameters.unwrap_or_default(),
        valid_until,
        lease,
    };
    let present: Vec<String> = databases
        .iter()
        .filter(|db| db.desired() == DesiredState::Present)
        .map(|db| db.name.clone())
        .collect();
    check_levels(&levels, &present).map_err(ApiError::unprocessable)?;
    let sealed = sealed_credentials(&state, &cluster, &name).await;
    let (written, access) = if levels.is_empty() {
        (store.insert_user(id, &name, &sealed, &settings).await?, None)
    } else {
        let (written, access) = store.insert_user_with_access(id, &name, &sealed, &settings, &levels).await?;
        (written, Some(access))
    };
    let user =
        settle_create(&state, ObjectKind::User, &written, &name, id, || store.get_user_batched(id, &name))
            .await?;
    if let Some(access) = &access {
        settle_access(&state, &cluster, access).await?;
    }
    Ok((StatusCode::CREATED, one(&user, &state, &caller, &cluster).await?))
}

/// Show a user.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/users/{username}", operation_id = "databases_get_user", tag = "Users",
    responses((status = 200, description = "The user", body = UserResponse)))]
pub(super) async fn get(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<UserResponse>, ApiError> {
    one(&state.store.get_user(cluster.cluster_id, &name).await?, &state, &caller, &cluster).await
}

/// Change a user's settings (answers 201, as DigitalOcean does).
#[utoipa::path(put, path = "/v2/databases/{database_cluster_uuid}/users/{username}", operation_id = "databases_update_user", tag = "Users", request_body = UpdateUser,
    responses((status = 201, description = "Updated", body = UserResponse),
        ChangesUser,
        (status = 422, description = "Missing settings, an invalid connection limit or parameter, or REPLICATION where it is not allowed (never for the primary user)", body = ErrorBody)))]
pub(super) async fn update(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let settings = required(body.settings, "settings")?;
    let (store, id) = (&state.store, cluster.cluster_id);
    let (current, databases) = tokio::try_join!(store.get_user(id, &name), store.list_databases(id))?;
    let replication = settings.pg_allow_replication.unwrap_or(false);
    if current.is_primary() && replication {
        return Err(ApiError::unprocessable(format!(
            "pg_allow_replication cannot be given to the primary user {name:?}"
        )));
    }
    check_replication(&state, &cluster, replication).await?;
    let (connection_limit, parameters) = settings.checked_extensions(&databases)?;
    let valid_until = match settings.valid_until {
        Some(Some(t)) => Some(Some(checked_expiry(Some(&current), t)?)),
        Some(None) => Some(checked_expiry(Some(&current), Utc::now()).map(|_| None)?),
        None => None,
    };
    let change = SettingsChange { allow_replication: replication, connection_limit, parameters, valid_until };
    let written = store.update_user_settings(id, &name, &change).await?;
    let user = settled_user(&state, &cluster, &written).await?.ok_or_else(ApiError::not_found)?;
    Ok((StatusCode::CREATED, one(&user, &state, &caller, &cluster).await?))
}

/// `POST …/reset_auth`: `{}` for PostgreSQL, as DigitalOcean takes it (the fields it takes for
/// other engines are ignored).
#[derive(Deserialize, ToSchema, Default)]
pub(super) struct ResetAuth {
    /// Keep the old password working this long (`10m`, `1h`; at most 7 days) while the new one
    /// is taken up (pgplane extension): the new password belongs to the user's second login,
    /// named in the answer's `login`, which acts as the user (what either login creates is the
    /// user's). After the grace the old login stops and its sessions end. Without it, the old
    /// password stops at once, as on DigitalOcean.
    #[schema(example = "10m")]
    grace: Option<String>,
}

/// The longest grace of a rotation.
const LONGEST_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Give a user a new generated password; the old one stops working at once, or (with `grace`)
/// once the grace is over (answers 200).
#[utoipa::path(post, path = "/v2/databases/{database_cluster_uuid}/users/{username}/reset_auth", operation_id = "databases_reset_auth", tag = "Users", request_body = ResetAuth,
    responses((status = 200, description = "The user with its new password (and, after a rotation with a grace, the `login` it belongs to)", body = UserResponse),
        ChangesUser,
        (status = 422, description = "An invalid `grace`, or a second login whose name is taken", body = ErrorBody)))]
pub(super) async fn reset_auth(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<ResetAuth>,
) -> Result<Json<UserResponse>, ApiError> {
    // A plain reset is one write (an unknown user is found by it, after its verifier was
    // computed, as a create pays for one); a rotation starts from the user as it is.
    let written = match body.grace.as_deref() {
        None => {
            let sealed = sealed_credentials(&state, &cluster, &name).await;
            state.store.replace_user_credentials(cluster.cluster_id, &name, &sealed).await?
        }
        Some(grace) => {
            let current = state.store.get_user(cluster.cluster_id, &name).await?;
            rotate_with_grace(&state, &cluster, &current, grace).await?
        }
    };
    let user = settled_user(&state, &cluster, &written).await?.ok_or_else(ApiError::not_found)?;
    one(&user, &state, &caller, &cluster).await
}

/// Rotates `user`'s credentials keeping the current ones working for `grace` (see
/// [`ResetAuth::grace`]): the new ones go to the login that is not current (its alternate
/// login, `<name>_alt`, named at its first such rotation), the current ones are re-sealed as
/// the other login's.
async fn rotate_with_grace(
    state: &AppState,
    cluster: &Cluster,
    user: &User,
    grace: &str,
) -> Result<User, ApiError> {
    let grace = lifetime("grace", grace)?;
    if grace > LONGEST_GRACE {
        return Err(ApiError::unprocessable("grace must be at most 7d"));
    }
    let alternate = match &user.alternate_login {
        Some(alternate) => alternate.clone(),
        None => {
            let alternate = format!("{}_alt", user.name);
            if alternate == cluster.admin_user {
                return Err(ApiError::unprocessable(format!(
                    "cannot rotate {:?} with a grace: its second login would be {alternate:?}, the admin role",
                    user.name
                )));
            }
            check_identifier(ObjectKind::User, &alternate).map_err(|e| {
                ApiError::unprocessable(format!("cannot rotate {:?} with a grace: {e}", user.name))
            })?;
            alternate
        }
    };
    let id = cluster.cluster_id;
    let current = state
        .sealer
        .open(&user.credentials_sealed, &User::credentials_context(id, &user.name))
        .map_err(|_| {
            ApiError::unprocessable(
                "the user's stored credentials cannot be opened with the configured secret key",
            )
        })?;
    let other = state.sealer.seal(&current, &User::other_credentials_context(id, &user.name));
    let sealed = sealed_credentials(state, cluster, &user.name).await;
    Ok(state
        .store
        .rotate_user_credentials(id, &user.name, &user.credentials_sealed, &sealed, &other, &alternate, grace)
        .await?)
}

/// Delete a user: its logins stop, its sessions are ended and what it owns, in every database,
/// goes to its heir (`reassign_to`, default the primary user); or, with `if_owns=refuse`, a user
/// that owns objects is not deleted (409 with the dependency report).
#[utoipa::path(delete, path = "/v2/databases/{database_cluster_uuid}/users/{username}", operation_id = "databases_delete_user", tag = "Users",
    params(DeleteUserQuery),
    responses((status = 204, description = "Deleted (or deletion pending while the target is unreachable)"),
        (status = 409, description = "`if_owns=refuse` and the user owns objects (the body carries `dependencies`, as `GET …/dependencies` answers), or the user is the heir of a pending deletion; nothing changed", body = ErrorBody),
        (status = 422, description = "The primary user cannot be deleted, or `reassign_to` is not a present user of the cluster", body = ErrorBody),
        (status = 503, description = "`if_owns=refuse` and the target cannot be read", body = ErrorBody)))]
pub(super) async fn delete(
    TeamCluster { state, cluster, note, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<DeleteUserQuery>,
) -> Result<StatusCode, ApiError> {
    query.note(&note, &cluster.primary_user);
    // A lease revoked without an heir named goes to the one it was created with. The store
    // refuses the primary user, and an unknown one, in the transaction that marks the user.
    let named = query.names_heir();
    let heir = check_user_deletion(&state, &cluster, &name, query).await?;
    let heir = if named { Heir::Named(heir.as_deref()) } else { Heir::Stored };
    let (store, id) = (&state.store, cluster.cluster_id);
    let (generation, written_at) = store.request_user_deletion(id, &name, heir).await?;
    settle(&state, id, generation, written_at, || store.get_user_batched(id, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
