//! The registration dry run (`POST /v2/databases?dry_run=true`): what registering a server
//! would create, adopt or refuse there, found with one probe and the checks registration makes.
//! Nothing is written on the target or in the store.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use pgplane_core::access::is_group;
use pgplane_target_server::primary::GrantCounts;
use pgplane_target_server::{ServerFacts, TargetSpec};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

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
    /// What would work differently on this server (see the registration's `pgplane.notices`).
    notices: Vec<String>,
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
pub(crate) struct RegisterQuery {
    /// `true`: probe the server and answer (200) what registration would create, adopt or
    /// refuse there, writing nothing anywhere. `false` or absent: register. Any other value,
    /// or the key twice, is refused (422).
    dry_run: Option<bool>,
}

/// Whether a registration is a dry run, read once from its query for both the handler and the
/// audit log (which records a dry run as `cluster.register_dry_run`).
pub(crate) struct DryRun(pub bool);

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
pub(crate) struct Registration<'a> {
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

/// How many names of untouched objects a dry run lists.
const UNTOUCHED_NAMES: usize = 50;

/// A registration dry run: one probe (counted like any), the checks registration makes, and
/// what the first pass would create or adopt. Nothing is written.
pub(crate) async fn dry_run(
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
            Some(owner) if other_roles.contains(owner) || is_group(owner) => (
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
        .filter(|o| !ours(&o.name) && !o.is_theirs(&other_roles, &holders) && !is_group(&o.name))
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
            notices: facts.notices(&r.spec.admin.user),
            server_version: facts.version.clone(),
            admin_is_superuser: facts.is_superuser,
            actions,
            untouched,
        },
    })
}
