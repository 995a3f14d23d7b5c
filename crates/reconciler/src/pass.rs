//! One reconcile pass over one cluster: load desired state (every object on a resync, the
//! changed ones otherwise), observe the target, plan a step per object, apply the steps in a
//! safe order, record the outcomes phase by phase and end the pass (scheduling a retry with
//! backoff when anything failed).

use std::cell::Cell;
use std::time::Duration;

use chrono::Utc;
use pgplane_core::model::{Cluster, Database, DesiredState, SyncStatus, User};
use pgplane_core::passwords::Credentials;
use pgplane_core::store::{ObjectKind, ObjectOutcome, Outcome, PassCluster};
use rand::Rng;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::apply;
use crate::controller::Shared;
use crate::error::TargetError;
use crate::observe::{observe, Observed};
use crate::plan::{plan_database, plan_role, DesiredDatabase, DesiredRole, Step};
use crate::target::{Object, Pools, TargetSpec};

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
    /// Whether every object was compared (a resync), not only the changed ones.
    pub full: bool,
    /// Whether the target was reached and observed.
    pub reached: bool,
    /// The cluster no longer exists.
    pub gone: bool,
    /// Nothing was left to do: the target was not contacted.
    pub idle: bool,
    /// The cluster's desired state changed during the pass: another one is due at once.
    pub more: bool,
}

impl PassSummary {
    /// Takes in what ending the pass returned (see `finish`).
    fn end(&mut self, finished: Option<bool>) {
        self.gone = finished.is_none();
        self.more = finished.unwrap_or(false);
    }
}

/// A role of the pass with the desired state and bookkeeping needed to record its outcome.
struct RoleItem {
    desired: DesiredRole,
    user: User,
}

/// What a pass has concluded so far: the outcomes not yet recorded, its first failure, and how
/// many steps touched the target.
#[derive(Default)]
struct Ledger<'a> {
    outcomes: Vec<ObjectOutcome<'a>>,
    first_error: Option<String>,
    changes: usize,
}

impl Ledger<'_> {
    /// Records the outcomes concluded so far, in one statement per kind of object. Called after
    /// each phase of a pass (and each database step), so that a pass abandoned later (its
    /// deadline, a crash) keeps what it did, above all the conflicts that give a claimed name
    /// back to its owner.
    async fn flush(&mut self, shared: &Shared, cluster_id: Uuid) -> Result<(), pgplane_core::Error> {
        if self.outcomes.is_empty() {
            return Ok(());
        }
        shared.store.record_outcomes(cluster_id, &self.outcomes).await?;
        self.outcomes.clear();
        Ok(())
    }
}

/// The pass's sessions on the target. A session that may still have statement logging turned
/// off (its role steps did not get as far as restoring it) is closed when the pass ends,
/// however it ends, instead of going back to the pool.
struct Sessions {
    objects: Vec<Object>,
    restored: Vec<Cell<bool>>,
}

impl Sessions {
    fn new(objects: Vec<Object>) -> Self {
        let restored = objects.iter().map(|_| Cell::new(true)).collect();
        Self { objects, restored }
    }

    fn clients(&self) -> Vec<&Client> {
        self.objects.iter().map(|o| &****o).collect()
    }

    /// Marks whether each session's logging settings are as they were.
    fn set_restored(&self, restored: impl IntoIterator<Item = bool>) {
        for (cell, value) in self.restored.iter().zip(restored) {
            cell.set(value);
        }
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for (object, restored) in self.objects.drain(..).zip(&self.restored) {
            if !restored.get() {
                drop(Object::take(object));
            }
        }
    }
}

/// Runs one pass over `cluster_id`: a full one when `force_full` or when the cluster's resync
/// is due, otherwise one over the objects whose desired state changed. Errors are recorded in
/// the store, not returned: the returned error is only for failures of the metadata store.
pub(crate) async fn run_pass(
    shared: &Shared,
    cluster_id: Uuid,
    force_full: bool,
) -> Result<PassSummary, pgplane_core::Error> {
    let Some(PassCluster { cluster, resync_due }) =
        shared.store.cluster_for_pass(cluster_id, shared.config.resync_interval).await?
    else {
        return Ok(PassSummary { gone: true, ..PassSummary::default() });
    };
    let full = force_full || resync_due;
    let (users, databases) = shared.store.cluster_objects(cluster_id, !full).await?;
    let mut summary =
        PassSummary { users: users.len(), databases: databases.len(), full, ..PassSummary::default() };
    if !full && users.is_empty() && databases.is_empty() {
        // Whatever bumped the generation is applied already.
        summary.idle = true;
        summary.end(finish(shared, &cluster, false, None, None).await?);
        return Ok(summary);
    }

    let prepared = prepare(shared, &cluster, users);
    let (spec, roles, unopened) = match prepared {
        Ok(p) => p,
        Err(e) => return fail_pass(shared, &cluster, full, &databases, &[], &e).await.map(|()| summary),
    };
    let unopened_error = record_unopened(shared, &cluster, &unopened).await?;
    let spec = match spec.checked(&shared.config.target_policy).await {
        Ok(s) => s,
        Err(e) => return fail_pass(shared, &cluster, full, &databases, &roles, &e).await.map(|()| summary),
    };
    let pool = match shared.pools.get(cluster_id, &spec, shared.config.session_limits) {
        Ok(p) => p,
        Err(e) => return fail_pass(shared, &cluster, full, &databases, &roles, &e).await.map(|()| summary),
    };
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            return fail_pass(shared, &cluster, full, &databases, &roles, &e.into()).await.map(|()| summary)
        }
    };
    let role_names: Vec<&str> = roles.iter().map(|r| r.desired.name.as_str()).collect();
    let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    let observed = match observe(&client, &role_names, &db_names, &cluster.primary_user).await {
        Ok(o) => o,
        Err(e) => return fail_pass(shared, &cluster, full, &databases, &roles, &e).await.map(|()| summary),
    };
    if let Err(e) = check_server(shared, &cluster, &observed).await {
        return fail_pass(shared, &cluster, full, &databases, &roles, &e).await.map(|()| summary);
    }
    summary.reached = true;

    // Order: roles to create or fix (the primary user first: databases are owned by it),
    // databases to create or fix, databases to drop, then roles to drop (their objects are
    // handed to the primary user).
    let mut ledger = Ledger { first_error: unopened_error, ..Ledger::default() };
    let planned: Vec<(&RoleItem, Step)> =
        roles.iter().map(|r| (r, plan_role(&r.desired, &observed, &cluster.primary_user))).collect();
    let (mut present, absent): (Vec<_>, Vec<_>) =
        planned.into_iter().partition(|(r, _)| r.desired.state == DesiredState::Present);
    present.sort_by_key(|(r, _)| !r.desired.primary);
    // Several role steps share the server's cores over a second session, when the pool has one
    // to spare at once.
    let helper = if present.iter().filter(|(_, step)| step.changes_target()).count() > 1 {
        Pools::spare(&pool).await
    } else {
        None
    };
    let sessions = Sessions::new(std::iter::once(client).chain(helper).collect());
    let clients = sessions.clients();
    // Until the role steps say otherwise, a session may be left with logging off.
    sessions.set_restored(clients.iter().map(|_| !observed.admin_is_superuser));
    let restored = apply_roles(shared, &cluster, &clients, &observed, &present, &mut ledger).await?;
    sessions.set_restored(restored);
    ledger.flush(shared, cluster_id).await?;
    apply_databases(shared, &cluster, clients[0], &observed, &databases, &mut ledger).await?;
    drop_roles(shared, &cluster, &spec, clients[0], &absent, &mut ledger).await?;
    ledger.flush(shared, cluster_id).await?;

    summary.changes = ledger.changes;
    shared.stats.ddl_steps.fetch_add(ledger.changes as u64, std::sync::atomic::Ordering::Relaxed);
    let version = Some((observed.version_num, observed.version.as_str()));
    summary.end(finish(shared, &cluster, full, version, ledger.first_error.as_deref()).await?);
    Ok(summary)
}

/// A pass changes only the server the cluster was registered on (or confirmed moved to): a
/// target address that now leads to another server (DNS, a failover to the wrong host, a
/// re-used port) is refused before any step. A cluster registered before pgplane recorded
/// server identities learns it here, claiming its names on that server.
async fn check_server(shared: &Shared, cluster: &Cluster, observed: &Observed) -> Result<(), TargetError> {
    match &cluster.server_id {
        Some(expected) if *expected == observed.server_id => Ok(()),
        Some(expected) => Err(TargetError::Refused(format!(
            "the server at {}:{} is not the one this cluster is registered on (server {}, registered \
             {expected}); pgplane changed nothing there. If the cluster moved, confirm it with \
             PUT /v2/databases/{}/pgplane and \"confirm_move\": true",
            cluster.host, cluster.port, observed.server_id, cluster.cluster_id
        ))),
        None => Ok(shared.store.learn_server_id(cluster.cluster_id, &observed.server_id).await?),
    }
}

/// A user left out of a pass because its stored credentials cannot be opened (the secret key
/// changed without it, or the row was damaged), with the reason recorded on it.
struct Unopened {
    user: User,
    reason: String,
}

/// Unseals what the pass needs: the admin connection and the verifier of each role that should
/// exist (a role to be dropped needs none). A user whose credentials cannot be opened is left
/// out of the pass and returned apart: it fails alone, the rest of the cluster goes ahead.
fn prepare(
    shared: &Shared,
    cluster: &Cluster,
    users: Vec<User>,
) -> Result<(TargetSpec, Vec<RoleItem>, Vec<Unopened>), TargetError> {
    let spec = TargetSpec::of(cluster, &shared.sealer)?;
    let mut roles = Vec::with_capacity(users.len());
    let mut unopened = Vec::new();
    for user in users {
        let state = user.desired();
        let verifier = match state {
            DesiredState::Absent => Ok(String::new()),
            DesiredState::Present => verifier_of(shared, &user),
        };
        match verifier {
            Ok(verifier) => {
                let desired = DesiredRole {
                    name: user.name.clone(),
                    primary: user.is_primary(),
                    allow_replication: user.allow_replication,
                    verifier,
                    state,
                    claimed: user.claimed,
                    changed: user.applied_generation < user.generation,
                };
                roles.push(RoleItem { desired, user });
            }
            Err(e) => unopened.push(Unopened { user, reason: e.to_string() }),
        }
    }
    Ok((spec, roles, unopened))
}

/// The SCRAM verifier in a user's sealed credentials.
fn verifier_of(shared: &Shared, user: &User) -> Result<String, TargetError> {
    let opened = shared
        .sealer
        .open(&user.credentials_sealed, &User::credentials_context(user.cluster_id, &user.name))?;
    let credentials: Credentials = serde_json::from_slice(&opened)
        .map_err(|_| TargetError::Internal("stored credentials are malformed".into()))?;
    Ok(credentials.verifier)
}

/// Records the failure of each user left out of the pass; returns the first, for the pass.
async fn record_unopened(
    shared: &Shared,
    cluster: &Cluster,
    unopened: &[Unopened],
) -> Result<Option<String>, pgplane_core::Error> {
    for u in unopened {
        tracing::warn!(cluster.id = %cluster.cluster_id, name = %u.user.name, error = %u.reason, "user left out of the pass");
    }
    let left_out: Vec<(&str, &str)> =
        unopened.iter().map(|u| (u.user.name.as_str(), u.reason.as_str())).collect();
    shared.store.record_left_out(cluster.cluster_id, ObjectKind::User, &left_out).await?;
    Ok(unopened.first().map(|u| format!("user {:?}: {}", u.user.name, u.reason)))
}

/// The message that carries out a role's step, if the step issues DDL here.
fn role_statement(role: &DesiredRole, step: &Step) -> Option<String> {
    match step {
        Step::CreateRole { attrs, grant_admin_to } => {
            Some(apply::create_role_sql(&role.name, *attrs, &role.verifier, grant_admin_to.as_deref()))
        }
        Step::AlterRole { attrs, set_password, grant_admin_to } => Some(apply::alter_role_sql(
            &role.name,
            *attrs,
            set_password.then_some(role.verifier.as_str()),
            grant_admin_to.as_deref(),
        )),
        _ => None,
    }
}

/// Creates and fixes the roles that should exist: claims the new ones first (one statement),
/// then runs every step pipelined on one session. Returns whether the session can be reused.
async fn apply_roles<'a>(
    shared: &Shared,
    cluster: &Cluster,
    sessions: &[&Client],
    observed: &Observed,
    planned: &[(&'a RoleItem, Step)],
    ledger: &mut Ledger<'a>,
) -> Result<Vec<bool>, pgplane_core::Error> {
    let claims: Vec<&str> = planned
        .iter()
        .filter(|(r, step)| matches!(step, Step::CreateRole { .. }) && !r.desired.claimed)
        .map(|(r, _)| r.desired.name.as_str())
        .collect();
    shared.store.claim(ObjectKind::User, cluster.cluster_id, &claims).await?;
    let statements: Vec<(usize, String)> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, (r, step))| role_statement(&r.desired, step).map(|sql| (i, sql)))
        .collect();
    // The primary user first, on its own: databases are owned by it and the other roles'
    // ADMIN OPTION is granted to it.
    let quiet = observed.admin_is_superuser;
    let primary_first = planned.first().is_some_and(|(r, _)| r.desired.primary)
        && statements.first().is_some_and(|(i, _)| *i == 0);
    let (first, rest) = statements.split_at(usize::from(primary_first));
    let sql = |part: &[(usize, String)]| part.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>();
    let (mut results, mut clean) = apply::run_role_statements(&sessions[..1], &sql(first), quiet).await;
    let (more, more_clean) = apply::run_role_statements(sessions, &sql(rest), quiet).await;
    results.extend(more);
    clean[0] &= more_clean[0];
    clean.extend(more_clean.into_iter().skip(1));
    let mut by_item: Vec<Result<(), TargetError>> = planned.iter().map(|_| Ok(())).collect();
    for ((i, _), result) in statements.iter().zip(results) {
        by_item[*i] = result;
    }
    for ((item, step), result) in planned.iter().zip(by_item) {
        let role = &item.desired;
        let result = match (step, result) {
            (Step::CreateRole { .. }, Err(e)) if e.sqlstate() == Some(apply::DUPLICATE_OBJECT) => {
                Err(StepError::Conflict(appeared("role", &role.name)))
            }
            (_, other) => other.map_err(StepError::from),
        };
        let outcome = outcome_of(step, result);
        if item.user.sync() == SyncStatus::Ready && !role.changed {
            if let Some(found) = role_drift(role, step, observed) {
                report_drift(shared, cluster, ObjectKind::User, &role.name, &found, &outcome).await?;
            }
        }
        conclude(cluster, ledger, Record::of_user(&item.user), step, outcome);
    }
    Ok(clean)
}

/// Drops the roles whose step is DropRole, together, and concludes every role that should be
/// gone.
async fn drop_roles<'a>(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &Client,
    planned: &[(&'a RoleItem, Step)],
    ledger: &mut Ledger<'a>,
) -> Result<(), pgplane_core::Error> {
    let (drops, others): (Vec<_>, Vec<_>) =
        planned.iter().partition(|(_, step)| matches!(step, Step::DropRole { .. }));
    for (item, step) in others {
        conclude(cluster, ledger, Record::of_user(&item.user), step, outcome_of(step, Ok(())));
    }
    if drops.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = drops.iter().map(|(i, _)| i.desired.name.as_str()).collect();
    let results =
        apply::drop_roles(client, spec, shared.config.session_limits, &names, &cluster.primary_user).await;
    for ((item, step), result) in drops.into_iter().zip(results) {
        let outcome = outcome_of(step, result.map_err(Into::into));
        conclude(cluster, ledger, Record::of_user(&item.user), step, outcome);
    }
    Ok(())
}

/// Creates, fixes and drops databases, one at a time (each is a lot of work for the server,
/// and DROP DATABASE forces a checkpoint); the new ones are claimed first, in one statement.
async fn apply_databases<'a>(
    shared: &Shared,
    cluster: &Cluster,
    client: &Client,
    observed: &Observed,
    databases: &'a [Database],
    ledger: &mut Ledger<'a>,
) -> Result<(), pgplane_core::Error> {
    let planned: Vec<(&Database, Step)> = databases
        .iter()
        .map(|db| {
            let desired = DesiredDatabase { name: db.name.clone(), state: db.desired(), claimed: db.claimed };
            (db, plan_database(&desired, observed, &cluster.primary_user))
        })
        .collect();
    let claims: Vec<&str> = planned
        .iter()
        .filter(|(db, step)| matches!(step, Step::CreateDatabase { .. }) && !db.claimed)
        .map(|(db, _)| db.name.as_str())
        .collect();
    shared.store.claim(ObjectKind::Database, cluster.cluster_id, &claims).await?;
    // Databases to create or fix before those to drop.
    let (present, absent): (Vec<_>, Vec<_>) =
        planned.into_iter().partition(|(db, _)| db.desired() == DesiredState::Present);
    for (db, step) in present.into_iter().chain(absent) {
        let result = match &step {
            Step::CreateDatabase { owner } => match apply::create_database(client, &db.name, owner).await {
                Err(e) if e.sqlstate() == Some(apply::DUPLICATE_DATABASE) => {
                    Err(StepError::Conflict(appeared("database", &db.name)))
                }
                other => other.map_err(Into::into),
            },
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
        conclude(cluster, ledger, Record::of_database(db), &step, outcome);
        ledger.flush(shared, cluster.cluster_id).await?;
    }
    Ok(())
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
    crate::metrics::drift(kind.noun(), repaired);
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
    /// It carries an error from an earlier pass (to be cleared).
    has_error: bool,
}

impl<'a> Record<'a> {
    fn of_user(user: &'a User) -> Self {
        Record {
            kind: ObjectKind::User,
            name: &user.name,
            generation: user.generation,
            applied_generation: user.applied_generation,
            sync: user.sync(),
            has_error: user.last_error.is_some(),
        }
    }

    fn of_database(db: &'a Database) -> Self {
        Record {
            kind: ObjectKind::Database,
            name: &db.name,
            generation: db.generation,
            applied_generation: db.applied_generation,
            sync: db.sync(),
            has_error: db.last_error.is_some(),
        }
    }
}

/// Ends one object's step: counts and logs it when it touched the target, remembers the
/// pass's first failure, and keeps the outcome to record unless it changes nothing (an object
/// already ready and in sync, with no error to clear), so that a pass over a converged cluster
/// writes nothing but its end.
fn conclude<'a>(
    cluster: &Cluster,
    ledger: &mut Ledger<'a>,
    object: Record<'a>,
    step: &Step,
    outcome: Outcome,
) {
    let (kind, name) = (object.kind, object.name);
    if step.changes_target() {
        ledger.changes += 1;
        let ok = matches!(outcome, Outcome::Applied | Outcome::Dropped);
        crate::metrics::ddl(step_name(step), ok);
        tracing::info!(cluster.id = %cluster.cluster_id, kind = kind.noun(), name, step = step_name(step), ok, "step");
    }
    let in_sync = object.applied_generation == object.generation;
    let unchanged = match &outcome {
        Outcome::Applied => object.sync == SyncStatus::Ready && in_sync && !object.has_error,
        Outcome::Conflict(_) => object.sync == SyncStatus::Conflict && in_sync,
        _ => false,
    };
    if let Outcome::Failed(message) = &outcome {
        ledger.first_error.get_or_insert_with(|| format!("{} {name:?}: {message}", kind.noun()));
    }
    if !unchanged {
        ledger.outcomes.push(ObjectOutcome { kind, name, generation: object.generation, outcome });
    }
}

/// Ends a pass that could not reach the target: every object not yet in sync carries the
/// error, and the cluster is retried with backoff.
async fn fail_pass(
    shared: &Shared,
    cluster: &Cluster,
    full: bool,
    databases: &[Database],
    roles: &[RoleItem],
    error: &TargetError,
) -> Result<(), pgplane_core::Error> {
    let message = error.to_string();
    tracing::warn!(cluster.id = %cluster.cluster_id, error = %message, "reconcile pass failed");
    let outcomes: Vec<ObjectOutcome<'_>> = roles
        .iter()
        .map(|r| Record::of_user(&r.user))
        .chain(databases.iter().map(Record::of_database))
        .filter(|o| o.sync == SyncStatus::Pending || o.applied_generation < o.generation)
        .map(|o| ObjectOutcome {
            kind: o.kind,
            name: o.name,
            generation: o.generation,
            outcome: Outcome::Failed(message.clone()),
        })
        .collect();
    shared.store.record_outcomes(cluster.cluster_id, &outcomes).await?;
    finish(shared, cluster, full, None, Some(&message)).await.map(|_| ())
}

/// Ends a pass that had to be abandoned (it ran past its deadline), so that the cluster is
/// retried with backoff.
pub(crate) async fn fail_unfinished(
    shared: &Shared,
    cluster_id: Uuid,
    message: &str,
) -> Result<PassSummary, pgplane_core::Error> {
    let mut summary = PassSummary::default();
    match shared.store.cluster_by_id(cluster_id).await? {
        Some(cluster) => summary.end(finish(shared, &cluster, false, None, Some(message)).await?),
        None => summary.gone = true,
    }
    Ok(summary)
}

/// Ends a pass; returns None if the cluster no longer exists, otherwise whether another pass
/// is due at once.
async fn finish(
    shared: &Shared,
    cluster: &Cluster,
    full: bool,
    version: Option<(i32, &str)>,
    error: Option<&str>,
) -> Result<Option<bool>, pgplane_core::Error> {
    let retry_at = Utc::now()
        + chrono::Duration::from_std(backoff(cluster.attempts)).unwrap_or(chrono::Duration::seconds(1));
    shared.store.finish_pass(cluster, full, version, error, retry_at).await
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
