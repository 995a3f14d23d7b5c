//! One reconcile pass over one cluster: load desired state, observe the target, plan a step per
//! object, apply the steps in a safe order, record every outcome and end the pass (scheduling
//! a retry with backoff when anything failed).

use std::time::Duration;

use chrono::Utc;
use pgplane_core::model::{Cluster, Database, DesiredState, SyncStatus, User};
use pgplane_core::passwords::Credentials;
use pgplane_core::store::{ObjectKind, Outcome};
use rand::Rng;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::apply;
use crate::controller::Shared;
use crate::error::TargetError;
use crate::observe::{observe, Observed};
use crate::plan::{plan_database, plan_role, DesiredDatabase, DesiredRole, Step};
use crate::target::TargetSpec;

/// Retry delay after `attempts` failed passes: 1 s doubling to 5 minutes, with ±20% jitter so
/// that many clusters failing together do not retry in lockstep.
pub(crate) fn backoff(attempts: i32) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1 << attempts.clamp(0, 9) as u32);
    let capped = base.min(Duration::from_secs(300));
    capped.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// What one pass did, for the "reconcile pass finished" log event.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassSummary {
    pub users: usize,
    pub databases: usize,
    /// Steps that issued DDL on the target.
    pub changes: usize,
    /// Whether the target was reached and observed.
    pub reached: bool,
}

/// A role of the pass with the desired state and bookkeeping needed to record its outcome.
struct RoleItem {
    desired: DesiredRole,
    user: User,
}

/// Runs one pass over `cluster_id`. Errors are recorded in the store, not returned: the
/// returned error is only for failures of the metadata store itself.
pub(crate) async fn run_pass(shared: &Shared, cluster_id: Uuid) -> Result<PassSummary, pgplane_core::Error> {
    let Some(cluster) = shared.store.cluster_by_id(cluster_id).await? else {
        return Ok(PassSummary::default());
    };
    let users = shared.store.list_users(cluster_id).await?;
    let databases = shared.store.list_databases(cluster_id).await?;
    let mut summary =
        PassSummary { users: users.len(), databases: databases.len(), ..PassSummary::default() };

    let prepared = prepare(shared, &cluster, users);
    let (spec, roles) = match prepared {
        Ok(p) => p,
        Err(e) => return fail_pass(shared, &cluster, &databases, &[], &e).await.map(|()| summary),
    };
    let pool = match shared.pools.get(cluster_id, &spec, shared.config.session_limits) {
        Ok(p) => p,
        Err(e) => return fail_pass(shared, &cluster, &databases, &roles, &e).await.map(|()| summary),
    };
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail_pass(shared, &cluster, &databases, &roles, &e.into()).await.map(|()| summary),
    };
    let role_names: Vec<&str> = roles.iter().map(|r| r.desired.name.as_str()).collect();
    let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    let observed = match observe(&client, &role_names, &db_names, &cluster.primary_user).await {
        Ok(o) => o,
        Err(e) => return fail_pass(shared, &cluster, &databases, &roles, &e).await.map(|()| summary),
    };

    summary.reached = true;
    let mut first_error: Option<String> = None;
    // Order: roles to create or fix (the primary user first: databases are owned by it),
    // databases to create or fix, databases to drop, then roles to drop (their objects are
    // handed to the primary user).
    let (present_roles, absent_roles): (Vec<_>, Vec<_>) =
        roles.iter().partition(|r| r.desired.state == DesiredState::Present);
    let (present_dbs, absent_dbs): (Vec<_>, Vec<_>) =
        databases.iter().partition(|d| d.desired() == DesiredState::Present);
    let mut present_roles = present_roles;
    present_roles.sort_by_key(|r| !r.desired.primary);

    for item in &present_roles {
        summary.changes += usize::from(
            reconcile_role(shared, &cluster, &spec, &mut client, &observed, item, &mut first_error).await?,
        );
    }
    for db in present_dbs.iter().chain(absent_dbs.iter()) {
        summary.changes += usize::from(
            reconcile_database(shared, &cluster, &client, &observed, db, &mut first_error).await?,
        );
    }
    // Roles to drop go together: one session per database of the target for all of them.
    let (drops, others): (Vec<&RoleItem>, Vec<&RoleItem>) = absent_roles.iter().partition(|item| {
        matches!(plan_role(&item.desired, &observed, &cluster.primary_user), Step::DropRole { .. })
    });
    for item in others {
        summary.changes += usize::from(
            reconcile_role(shared, &cluster, &spec, &mut client, &observed, item, &mut first_error).await?,
        );
    }
    summary.changes += drop_roles(shared, &cluster, &spec, &client, &drops, &mut first_error).await?;

    let version = Some((observed.version_num, observed.version.as_str()));
    finish(shared, &cluster, version, first_error.as_deref()).await?;
    Ok(summary)
}

/// Unseals what the pass needs: the admin connection and each role's verifier.
fn prepare(
    shared: &Shared,
    cluster: &Cluster,
    users: Vec<User>,
) -> Result<(TargetSpec, Vec<RoleItem>), TargetError> {
    let spec = TargetSpec::of(cluster, &shared.sealer)?;
    let roles = users
        .into_iter()
        .map(|user| {
            let sealed = shared
                .sealer
                .open(&user.credentials_sealed, &User::credentials_context(user.cluster_id, &user.name))?;
            let credentials: Credentials = serde_json::from_slice(&sealed)
                .map_err(|_| TargetError::Internal("stored credentials are malformed".into()))?;
            let desired = DesiredRole {
                name: user.name.clone(),
                primary: user.is_primary(),
                allow_replication: user.allow_replication,
                verifier: credentials.verifier,
                state: user.desired(),
                claimed: user.claimed,
                changed: user.applied_generation < user.generation,
            };
            Ok(RoleItem { desired, user })
        })
        .collect::<Result<Vec<_>, TargetError>>()?;
    Ok((spec, roles))
}

async fn reconcile_role(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &mut Client,
    observed: &Observed,
    item: &RoleItem,
    first_error: &mut Option<String>,
) -> Result<bool, pgplane_core::Error> {
    let role = &item.desired;
    let step = plan_role(role, observed, &cluster.primary_user);
    let suppress = observed.admin_is_superuser;
    let result = match &step {
        Step::CreateRole { attrs, grant_admin_to } => {
            if !role.claimed {
                shared.store.claim(ObjectKind::User, cluster.cluster_id, &role.name).await?;
            }
            let grant = grant_admin_to.as_deref();
            match apply::create_role(client, &role.name, *attrs, &role.verifier, grant, suppress).await {
                Err(e) if e.sqlstate() == Some(apply::DUPLICATE_OBJECT) => {
                    Err(StepError::Conflict(appeared("role", &role.name)))
                }
                other => other.map_err(Into::into),
            }
        }
        Step::AlterRole { attrs, set_password, grant_admin_to } => {
            let verifier = set_password.then_some(role.verifier.as_str());
            let grant = grant_admin_to.as_deref();
            apply::alter_role(client, &role.name, *attrs, verifier, grant, suppress).await.map_err(Into::into)
        }
        Step::DropRole { reassign_to } => {
            let mut results =
                apply::drop_roles(client, spec, shared.config.session_limits, &[&role.name], reassign_to)
                    .await;
            results.pop().unwrap_or(Ok(())).map_err(Into::into)
        }
        _ => Ok(()),
    };
    let outcome = outcome_of(&step, result);
    if item.user.sync() == SyncStatus::Ready && !role.changed {
        if let Some(found) = role_drift(role, &step, observed) {
            report_drift(shared, cluster, ObjectKind::User, &role.name, &found, &outcome).await?;
        }
    }
    conclude(shared, cluster, &Record::of_user(&item.user), &step, outcome, first_error).await?;
    Ok(step.changes_target())
}

/// Drops the roles whose step is DropRole, together, and records each outcome. Returns how
/// many steps were taken.
async fn drop_roles(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &Client,
    items: &[&RoleItem],
    first_error: &mut Option<String>,
) -> Result<usize, pgplane_core::Error> {
    if items.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = items.iter().map(|i| i.desired.name.as_str()).collect();
    let results =
        apply::drop_roles(client, spec, shared.config.session_limits, &names, &cluster.primary_user).await;
    let step = Step::DropRole { reassign_to: cluster.primary_user.clone() };
    for (item, result) in items.iter().zip(results) {
        let outcome = outcome_of(&step, result.map_err(Into::into));
        conclude(shared, cluster, &Record::of_user(&item.user), &step, outcome, first_error).await?;
    }
    Ok(items.len())
}

async fn reconcile_database(
    shared: &Shared,
    cluster: &Cluster,
    client: &Client,
    observed: &Observed,
    db: &Database,
    first_error: &mut Option<String>,
) -> Result<bool, pgplane_core::Error> {
    let desired = DesiredDatabase { name: db.name.clone(), state: db.desired(), claimed: db.claimed };
    let step = plan_database(&desired, observed, &cluster.primary_user);
    let result = match &step {
        Step::CreateDatabase { owner } => {
            if !db.claimed {
                shared.store.claim(ObjectKind::Database, cluster.cluster_id, &db.name).await?;
            }
            match apply::create_database(client, &db.name, owner).await {
                Err(e) if e.sqlstate() == Some(apply::DUPLICATE_DATABASE) => {
                    Err(StepError::Conflict(appeared("database", &db.name)))
                }
                other => other.map_err(Into::into),
            }
        }
        Step::AlterDatabaseOwner { owner } => {
            apply::alter_database_owner(client, &db.name, owner).await.map_err(Into::into)
        }
        Step::DropDatabase => apply::drop_database(client, &db.name).await.map_err(Into::into),
        _ => Ok(()),
    };
    let outcome = outcome_of(&step, result);
    if db.sync() == SyncStatus::Ready && db.applied_generation == db.generation {
        if let Some(found) = database_drift(&db.name, &step, observed) {
            report_drift(shared, cluster, ObjectKind::Database, &db.name, &found, &outcome).await?;
        }
    }
    conclude(shared, cluster, &Record::of_database(db), &step, outcome, first_error).await?;
    Ok(step.changes_target())
}

/// Why applying a step did not succeed.
enum StepError {
    Target(TargetError),
    /// The target turned out to hold someone else's object of that name.
    Conflict(String),
}

impl From<TargetError> for StepError {
    fn from(e: TargetError) -> Self {
        StepError::Target(e)
    }
}

fn appeared(noun: &str, name: &str) -> String {
    format!(
        "a {noun} named {name:?} appeared on the target while pgplane was creating it; it was left untouched"
    )
}

/// The outcome of a step, given what applying it returned.
fn outcome_of(step: &Step, result: Result<(), StepError>) -> Outcome {
    match (step, result) {
        (Step::Conflict(m), _) => Outcome::Conflict(m.clone()),
        (_, Err(StepError::Conflict(m))) => Outcome::Conflict(m),
        (_, Err(StepError::Target(e))) => Outcome::Failed(e.to_string()),
        (Step::DropRole { .. } | Step::DropDatabase | Step::Forget, Ok(())) => Outcome::Dropped,
        _ => Outcome::Applied,
    }
}

/// What changed behind pgplane's back, when a role that was in sync needs a step.
fn role_drift(role: &DesiredRole, step: &Step, observed: &Observed) -> Option<String> {
    match step {
        Step::CreateRole { .. } => Some("the role was missing on the target".into()),
        Step::AlterRole { attrs, set_password, grant_admin_to } => {
            let mut found = Vec::new();
            if let Some(facts) = observed.roles.get(&role.name) {
                let flags = |a: &crate::observe::RoleAttrs| {
                    [
                        ("SUPERUSER", a.superuser),
                        ("CREATEDB", a.createdb),
                        ("CREATEROLE", a.createrole),
                        ("LOGIN", a.login),
                        ("REPLICATION", a.replication),
                        ("BYPASSRLS", a.bypassrls),
                    ]
                };
                for ((name, want), (_, have)) in flags(attrs).into_iter().zip(flags(&facts.attrs)) {
                    if want != have {
                        found.push(format!("{name} was {}", if have { "granted" } else { "removed" }));
                    }
                }
            }
            if *set_password {
                found.push("the password was changed".into());
            }
            if grant_admin_to.is_some() {
                found.push("the primary user's ADMIN OPTION on it was revoked".into());
            }
            Some(found.join(", "))
        }
        _ => None,
    }
}

/// What changed behind pgplane's back, when a database that was in sync needs a step.
fn database_drift(name: &str, step: &Step, observed: &Observed) -> Option<String> {
    match step {
        Step::CreateDatabase { .. } => Some("the database was missing on the target".into()),
        Step::AlterDatabaseOwner { .. } => Some(format!(
            "its owner was changed to {:?}",
            observed.databases.get(name).map(String::as_str).unwrap_or_default()
        )),
        _ => None,
    }
}

/// Logs and records drift, and whether this pass repaired it.
async fn report_drift(
    shared: &Shared,
    cluster: &Cluster,
    kind: ObjectKind,
    name: &str,
    found: &str,
    outcome: &Outcome,
) -> Result<(), pgplane_core::Error> {
    let repaired = *outcome == Outcome::Applied;
    tracing::warn!(cluster.id = %cluster.cluster_id, kind = kind.noun(), name, drift = found, repaired, "drift found");
    shared.store.record_drift(cluster.cluster_id, kind, name, found, repaired).await
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::InSync => "in_sync",
        Step::CreateRole { .. } => "create_role",
        Step::AlterRole { .. } => "alter_role",
        Step::DropRole { .. } => "drop_role",
        Step::CreateDatabase { .. } => "create_database",
        Step::AlterDatabaseOwner { .. } => "alter_database_owner",
        Step::DropDatabase => "drop_database",
        Step::Forget => "forget",
        Step::Conflict(_) => "conflict",
    }
}

/// What an object's outcome is recorded against.
struct Record<'a> {
    kind: ObjectKind,
    name: &'a str,
    generation: i64,
    applied_generation: i64,
    sync: SyncStatus,
}

impl<'a> Record<'a> {
    fn of_user(user: &'a User) -> Self {
        Record {
            kind: ObjectKind::User,
            name: &user.name,
            generation: user.generation,
            applied_generation: user.applied_generation,
            sync: user.sync(),
        }
    }

    fn of_database(db: &'a Database) -> Self {
        Record {
            kind: ObjectKind::Database,
            name: &db.name,
            generation: db.generation,
            applied_generation: db.applied_generation,
            sync: db.sync(),
        }
    }
}

/// Ends one object's step: counts and logs it when it touched the target, remembers the
/// pass's first failure, and records the outcome unless it changes nothing (an object already
/// ready and in sync), so that a pass over a converged cluster writes nothing but its end.
async fn conclude(
    shared: &Shared,
    cluster: &Cluster,
    object: &Record<'_>,
    step: &Step,
    outcome: Outcome,
    first_error: &mut Option<String>,
) -> Result<(), pgplane_core::Error> {
    let (kind, name) = (object.kind, object.name);
    if step.changes_target() {
        shared.stats.ddl_steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = matches!(outcome, Outcome::Applied | Outcome::Dropped);
        tracing::info!(cluster.id = %cluster.cluster_id, kind = kind.noun(), name, step = step_name(step), ok, "step");
    }
    let in_sync = object.applied_generation == object.generation;
    let unchanged = match &outcome {
        Outcome::Applied => object.sync == SyncStatus::Ready && in_sync,
        Outcome::Conflict(_) => object.sync == SyncStatus::Conflict && in_sync,
        _ => false,
    };
    if let Outcome::Failed(message) = &outcome {
        first_error.get_or_insert_with(|| format!("{} {name:?}: {message}", kind.noun()));
    }
    if unchanged {
        return Ok(());
    }
    shared.store.record_outcome(kind, cluster.cluster_id, name, object.generation, &outcome).await
}

/// Ends a pass that could not reach the target: every object not yet in sync carries the
/// error, and the cluster is retried with backoff.
async fn fail_pass(
    shared: &Shared,
    cluster: &Cluster,
    databases: &[Database],
    roles: &[RoleItem],
    error: &TargetError,
) -> Result<(), pgplane_core::Error> {
    let message = error.to_string();
    tracing::warn!(cluster.id = %cluster.cluster_id, error = %message, "reconcile pass failed");
    let failed = Outcome::Failed(message.clone());
    for item in roles.iter().filter(|r| r.user.sync() == SyncStatus::Pending || r.desired.changed) {
        shared
            .store
            .record_outcome(
                ObjectKind::User,
                cluster.cluster_id,
                &item.user.name,
                item.user.generation,
                &failed,
            )
            .await?;
    }
    for db in
        databases.iter().filter(|d| d.sync() == SyncStatus::Pending || d.applied_generation < d.generation)
    {
        shared
            .store
            .record_outcome(ObjectKind::Database, cluster.cluster_id, &db.name, db.generation, &failed)
            .await?;
    }
    finish(shared, cluster, None, Some(&message)).await
}

/// Ends a pass that had to be abandoned (it ran past its deadline), so that the cluster is
/// retried with backoff.
pub(crate) async fn fail_unfinished(
    shared: &Shared,
    cluster_id: Uuid,
    message: &str,
) -> Result<(), pgplane_core::Error> {
    match shared.store.cluster_by_id(cluster_id).await? {
        Some(cluster) => finish(shared, &cluster, None, Some(message)).await,
        None => Ok(()),
    }
}

async fn finish(
    shared: &Shared,
    cluster: &Cluster,
    version: Option<(i32, &str)>,
    error: Option<&str>,
) -> Result<(), pgplane_core::Error> {
    let retry_at = Utc::now()
        + chrono::Duration::from_std(backoff(cluster.attempts)).unwrap_or(chrono::Duration::seconds(1));
    shared.store.finish_pass(cluster.cluster_id, cluster.generation, version, error, retry_at).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(1200));
        assert!(backoff(3) >= Duration::from_millis(6400));
        assert!(backoff(30) <= Duration::from_secs(360));
        assert!(backoff(-1) <= Duration::from_millis(1200));
    }
}
