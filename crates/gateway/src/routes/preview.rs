//! Seeing before doing (pgplane extensions): what depends on a user before it is deleted
//! (`GET …/users/{name}/dependencies`, and the checks of a deletion with an heir or a refusal),
//! what the reconciler would do on a cluster's target right now (`GET …/plan`), and what
//! registering a server would create, adopt or refuse there (`POST /v2/databases?dry_run=true`).
//! All read-only on the target and in the store.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use std::collections::HashSet;

use pgplane_core::lifecycle::{DesiredState, SyncStatus};
use pgplane_core::model::{Cluster, User};
use pgplane_target_server::dependencies::{role_dependencies, RoleDependencies};
use pgplane_target_server::plan::Plan;
use pgplane_target_server::primary::GrantCounts;
use pgplane_target_server::{ServerFacts, TargetSpec};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, TeamCluster};
use crate::state::AppState;

/// 503 with `why`: the target cannot be read (or is not the registered server).
pub(super) fn unavailable(why: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)
}

/// Another server at the cluster's address (or one pgplane has not identified yet) is not the
/// cluster's: its names are not this team's to see.
pub(super) fn check_registered_server(cluster: &Cluster, server_id: &str) -> Result<(), ApiError> {
    if cluster.server_id.as_deref() == Some(server_id) {
        return Ok(());
    }
    Err(unavailable(
        "the server at the cluster's address is not (or not yet known to be) the registered one; \
         see the cluster's last_error"
            .into(),
    ))
}

/// `{"dependencies": …}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DependenciesResponse {
    dependencies: RoleDependencies,
}

/// What depends on `name`, a user pgplane manages in `cluster` (404 for any other name: a user
/// not created yet, or in conflict with a role pgplane does not manage there, is another's),
/// read live, naming only the cluster's own roles and databases.
pub(super) async fn dependencies_of(
    state: &AppState,
    cluster: &Cluster,
    name: &str,
) -> Result<RoleDependencies, ApiError> {
    if !on_server(&state.store.get_user(cluster.cluster_id, name).await?) {
        return Err(ApiError::not_found());
    }
    let spec = TargetSpec::of(cluster, &state.sealer).map_err(|_| ApiError::internal())?;
    let mut report = role_dependencies(&spec, state.prober.policy(), name)
        .await
        .map_err(|e| unavailable(format!("the target cannot be read: {e}")))?;
    check_registered_server(cluster, &report.server_id)?;
    let (users, dbs) = state.store.cluster_objects(cluster.cluster_id, false).await?;
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
fn on_server(user: &User) -> bool {
    user.claimed && user.sync_status != SyncStatus::Conflict
}

/// What a user owns on the target, per database (by kind, with counts and the first names),
/// the privileges it holds and the default privileges it set, and its memberships, read live
/// (read-only; one short session per database involved). What `DELETE …/users/{name}` would
/// hand to its heir.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/users/{username}/dependencies",
    operation_id = "pgplane_user_dependencies", tag = "Users",
    params(("database_cluster_uuid" = String, Path, description = "The cluster's id"), ("username" = String, Path, description = "The user's name (percent-encoded)")),
    responses(
        (status = 200, description = "What depends on the user", body = DependenciesResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such cluster or user", body = ErrorBody),
        (status = 503, description = "The target cannot be reached", body = ErrorBody),
    ))]
pub(super) async fn dependencies(
    State(state): State<AppState>,
    TeamCluster(cluster): TeamCluster,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<DependenciesResponse>, ApiError> {
    Ok(Json(DependenciesResponse { dependencies: dependencies_of(&state, &cluster, &name).await? }))
}

/// What deleting a user does with what it owns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IfOwns {
    /// Hand it to the heir (`reassign_to`, default the primary user), then drop the user.
    Reassign,
    /// Answer 409 with the dependency report and change nothing.
    Refuse,
}

/// `DELETE …/users/{name}` options (pgplane extensions; DigitalOcean clients send none).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub(super) struct DeleteUserQuery {
    /// The user that inherits what the deleted user owns, in every database: another present
    /// user of the same cluster, already created on the target, or the primary user (the
    /// default). Kept with the deletion request until the reconciler has dropped the user.
    reassign_to: Option<String>,
    /// `reassign` (default) or `refuse`: answer 409 with the dependency report, changing
    /// nothing, when the user owns objects or set default privileges.
    if_owns: Option<String>,
}

impl DeleteUserQuery {
    /// Tells the audit log the heir (the primary user unless named) and the ownership mode.
    pub(super) fn note(&self, note: &AuditNote, primary_user: &str) {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        note.detail("reassign_to", &given(&self.reassign_to).unwrap_or_else(|| primary_user.into()));
        note.detail("if_owns", &given(&self.if_owns).unwrap_or_else(|| "reassign".into()));
    }
}

/// Checks a deletion's options; returns the heir to store (None: the primary user), or the
/// 409 with the report when the caller asked to refuse and the user owns something.
pub(super) async fn check_user_deletion(
    state: &AppState,
    cluster: &Cluster,
    name: &str,
    query: DeleteUserQuery,
) -> Result<Option<String>, ApiError> {
    let heir = query.reassign_to.filter(|h| !h.is_empty());
    let mode = match query.if_owns.as_deref() {
        None | Some("" | "reassign") => IfOwns::Reassign,
        Some("refuse") => IfOwns::Refuse,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "if_owns must be \"reassign\" or \"refuse\", not {other:?}"
            )))
        }
    };
    let id = cluster.cluster_id;
    // (A user that is the heir of a pending deletion is refused by the store, atomically.)
    if let Some(heir) = &heir {
        if mode == IfOwns::Refuse {
            return Err(ApiError::unprocessable("reassign_to cannot be combined with if_owns=refuse"));
        }
        if heir == name {
            return Err(ApiError::unprocessable("reassign_to must name another user than the one deleted"));
        }
        match state.store.get_user(id, heir).await {
            Ok(u) if u.state == DesiredState::Present && u.claimed => {}
            Ok(u) if u.state == DesiredState::Present => {
                return Err(ApiError::unprocessable(format!(
                    "reassign_to {heir:?} is not created on the target yet (status {})",
                    u.sync_status.as_str()
                )))
            }
            Ok(_) | Err(pgplane_core::Error::NotFound(_)) => {
                return Err(ApiError::unprocessable(format!(
                    "reassign_to {heir:?} is not a user of this cluster (or is being deleted)"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if mode == IfOwns::Refuse && on_server(&state.store.get_user(id, name).await?) {
        let report = dependencies_of(state, cluster, name).await?;
        if report.owns_objects {
            let report = serde_json::to_value(&report).expect("reports serialise");
            return Err(ApiError::conflict(format!(
                "the user {name:?} owns objects on the target; nothing was changed (see dependencies; \
                 delete with reassign_to to hand them over)"
            ))
            .with_detail("dependencies", report));
        }
    }
    Ok(heir.filter(|h| *h != cluster.primary_user))
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
    tag = "Databases",
    params(("database_cluster_uuid" = String, Path, description = "The cluster's id")),
    responses(
        (status = 200, description = "The plan", body = PlanResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 503, description = "The target cannot be reached or is not the registered server", body = ErrorBody),
    ))]
pub(super) async fn plan(
    State(state): State<AppState>,
    TeamCluster(cluster): TeamCluster,
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

/// What registration would do with one of the cluster's own objects.
#[derive(Serialize, ToSchema)]
pub(crate) struct RegistrationAction {
    /// `user` (the primary user) or `database` (the default database).
    kind: &'static str,
    name: String,
    /// `create` (absent on the server), `adopt` (present, taken over: a primary user gets a new
    /// password and a primary user's attributes, a default database the primary user as owner)
    /// or `refuse` (another cluster on the server manages the name).
    action: &'static str,
    detail: String,
    /// For a primary user to adopt: the memberships pgplane did not grant that registration
    /// removes, by kind (members, ADMIN OPTION holders, memberships of other roles; no names).
    #[serde(skip_serializing_if = "Option::is_none")]
    removes: Option<GrantCounts>,
}

/// What is on the server that the cluster would leave alone.
#[derive(Serialize, ToSchema)]
pub(crate) struct Untouched {
    role_count: usize,
    /// The first 50 roles (PostgreSQL's `pg_*` roles aside).
    roles: Vec<String>,
    database_count: usize,
    /// The first 50 databases (templates aside).
    databases: Vec<String>,
}

/// What registering the server would do, found without changing anything.
#[derive(Serialize, ToSchema)]
pub(crate) struct RegistrationPreview {
    /// Whether the registration, sent now without `dry_run`, would be accepted.
    would_register: bool,
    /// Why it would be refused.
    refusals: Vec<String>,
    server_version: String,
    admin_is_superuser: bool,
    actions: Vec<RegistrationAction>,
    untouched: Untouched,
}

/// `{"registration": …}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct RegistrationPreviewResponse {
    registration: RegistrationPreview,
}

/// `POST /v2/databases` options (a pgplane extension).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub(super) struct RegisterQuery {
    /// `true`: probe the server and answer (200) what registration would create, adopt or
    /// refuse there, writing nothing anywhere. `false` or absent: register. Any other value,
    /// or the key twice, is refused (422).
    dry_run: Option<bool>,
}

/// Whether a registration is a dry run, read once from its query for both the handler and the
/// audit log (which records a dry run as `cluster.register_dry_run`).
pub(super) struct DryRun(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for DryRun {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiQuery(query) = ApiQuery::<RegisterQuery>::from_request_parts(parts, state).await?;
        let dry_run = query.dry_run == Some(true);
        if dry_run {
            AuditNote::from_request_parts(parts, state).await.unwrap_or_default().dry_run();
        }
        Ok(DryRun(dry_run))
    }
}

/// The names a registration would use, validated.
pub(super) struct Registration<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub spec: &'a TargetSpec,
    pub primary_user: &'a str,
    pub default_database: &'a str,
}

/// What a dry run's detail says about a primary user's foreign memberships, if it has any.
fn foreign_removal(counts: &GrantCounts) -> String {
    if counts.is_empty() {
        return String::new();
    }
    format!(", and would remove {} that it did not grant", counts.describe())
}

/// Whether `role` is named like one of pgplane's access group roles (a cluster's, never
/// anyone's to see as unmanaged).
pub(super) fn is_access_group(role: &str) -> bool {
    role.starts_with(pgplane_core::access::GROUP_PREFIX)
}

/// How many names of untouched objects a dry run lists.
const UNTOUCHED_NAMES: usize = 50;

/// A registration dry run: one probe (counted like any), the checks registration makes, and
/// what the first pass would create or adopt. Nothing is written.
pub(super) async fn dry_run(
    state: &AppState,
    caller: &Caller,
    r: Registration<'_>,
) -> Result<RegistrationPreviewResponse, ApiError> {
    let survey = state.prober.survey(caller.team_id, r.spec, r.primary_user, r.default_database).await?;
    let facts = &survey.facts;
    let mut refusals: Vec<String> = facts.unsuitability(&r.spec.admin.user).into_iter().collect();
    let major = ServerFacts::major(facts.version_num);
    if let Some(version) = r.version.filter(|v| *v != major) {
        refusals.push(format!("version {version:?} was requested but the target runs PostgreSQL {major}"));
    }
    if state.store.list_clusters(caller.team_id, None).await?.iter().any(|c| c.name == r.name) {
        refusals.push(format!("a cluster named {:?} already exists", r.name));
    }
    let clash = state
        .store
        .server_names_conflict(&facts.server_id, r.primary_user, &r.spec.admin.user, r.default_database)
        .await?;
    let (other_roles, other_dbs) =
        state.store.names_of_other_clusters(&facts.server_id, uuid::Uuid::nil()).await?;
    let user_action = if other_roles.iter().any(|n| n == r.primary_user) {
        ("refuse", "another cluster on this server manages or logs in as this role".to_string())
    } else {
        match &survey.primary_user {
            None => ("create", "created with LOGIN CREATEDB (and CREATEROLE from PostgreSQL 16)".into()),
            Some(attrs) => (
                "adopt",
                format!(
                    "exists (now {}); pgplane would give it a new password and a primary user's \
                     attributes{}",
                    if attrs.is_empty() { "no attributes".into() } else { attrs.join(" ") },
                    foreign_removal(&survey.primary_user_foreign)
                ),
            ),
        }
    };
    let db_action = if other_dbs.iter().any(|n| n == r.default_database) {
        ("refuse", "another cluster on this server manages this database".to_string())
    } else {
        match &survey.default_database_owner {
            None => ("create", format!("created, owned by {:?}", r.primary_user)),
            Some(owner) if owner == r.primary_user => ("adopt", "exists, owned by the primary user".into()),
            Some(owner) if other_roles.contains(owner) || is_access_group(owner) => (
                "adopt",
                format!(
                    "exists, owned by a role of another cluster; pgplane would make {:?} its owner",
                    r.primary_user
                ),
            ),
            Some(owner) => (
                "adopt",
                format!("exists, owned by {owner:?}; pgplane would make {:?} its owner", r.primary_user),
            ),
        }
    };
    refusals.extend(clash);
    // Untouched: neither the registration's own names nor any other cluster's (its objects,
    // the roles it logs in as, pgplane's access groups, what a role it manages holds).
    let holders: Vec<String> = other_roles.iter().filter(|n| **n != r.spec.admin.user).cloned().collect();
    let ours = |n: &String| n == r.primary_user || *n == r.spec.admin.user;
    let roles: Vec<String> = survey
        .roles
        .iter()
        .filter(|o| !ours(&o.name) && !o.is_theirs(&other_roles, &holders) && !is_access_group(&o.name))
        .map(|o| o.name.clone())
        .collect();
    let databases: Vec<String> = survey
        .databases
        .iter()
        .filter(|o| {
            o.name != r.default_database
                && o.name != r.spec.admin_database()
                && !o.is_theirs(&other_dbs, &holders)
        })
        .map(|o| o.name.clone())
        .collect();
    let untouched = Untouched {
        role_count: roles.len(),
        roles: roles.into_iter().take(UNTOUCHED_NAMES).collect(),
        database_count: databases.len(),
        databases: databases.into_iter().take(UNTOUCHED_NAMES).collect(),
    };
    let actions = vec![
        RegistrationAction {
            kind: "user",
            name: r.primary_user.to_string(),
            action: user_action.0,
            detail: user_action.1,
            removes: (user_action.0 == "adopt" && !survey.primary_user_foreign.is_empty())
                .then_some(survey.primary_user_foreign),
        },
        RegistrationAction {
            kind: "database",
            name: r.default_database.to_string(),
            action: db_action.0,
            detail: db_action.1,
            removes: None,
        },
    ];
    Ok(RegistrationPreviewResponse {
        registration: RegistrationPreview {
            would_register: refusals.is_empty(),
            refusals,
            server_version: facts.version.clone(),
            admin_is_superuser: facts.is_superuser,
            actions,
            untouched,
        },
    })
}
