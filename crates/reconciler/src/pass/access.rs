//! The access phases of a pass: carries out the access plan (`plan::access`) after the roles
//! and databases. Group names are recorded before their roles are created and each new role's
//! oid before its CREATE ROLE commits; fixes and memberships run on the admin session; each
//! database where groups gain or lose privileges is visited on a session of its own (a few at
//! once), its facts observed there (`observe::access`) and its statements sent in one message.
//! A step's failure is kept as the levels' error and does not stop unrelated work.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};
use pgplane_core::access::AccessLevel;
use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::{AccessProgress, Cluster, Database};
use tokio_postgres::Client;

use pgplane_target_server::{SessionLimits, TargetError, TargetSpec};

use crate::controller::Shared;
use crate::observe::access::{observe_database, observe_groups};
use crate::observe::Observed;
use crate::plan::access::{conflict_message, database_statements, plan, Group, Inputs, Visit};
use crate::sql;

/// Databases visited at once by one pass (each visit is one session on the target).
pub(crate) const VISITS_AT_ONCE: usize = 4;

/// What the access part of a pass did.
#[derive(Debug, Default)]
pub(crate) struct AccessSummary {
    /// Statements (messages) that changed the target.
    pub changes: usize,
    /// The first failure, for the pass's error.
    pub error: Option<String>,
}

/// The users whose levels wait to be carried out, read as a pass starts.
pub(crate) async fn pending(
    shared: &Shared,
    cluster: &Cluster,
) -> Result<Vec<AccessProgress>, pgplane_core::Error> {
    shared.store.pending_access(cluster.cluster_id).await
}

/// What visiting one database did.
#[derive(Default)]
struct Visited {
    /// Messages that changed the target.
    changes: usize,
    /// Drift found on groups that existed before the pass.
    drift: Vec<String>,
    error: Option<TargetError>,
}

/// One database's share of the work: observe, then one message with every statement (one
/// implicit transaction), then DROP OWNED for the groups to drop.
async fn visit(client: &Client, work: &Visit, primary: &str) -> Visited {
    let mut done = Visited::default();
    if !work.ensure.is_empty() {
        let facts = match observe_database(client, &work.ensure, primary).await {
            Ok(f) => f,
            Err(e) => return Visited { error: Some(e), ..done },
        };
        let (statements, drift) = database_statements(&work.ensure, &facts, primary);
        done.drift = drift;
        if !statements.is_empty() {
            match client.batch_execute(&statements.join("; ")).await {
                Ok(()) => done.changes += 1,
                Err(e) => return Visited { error: Some(e.into()), ..done },
            }
        }
    }
    if !work.drop.is_empty() {
        let roles: Vec<&str> = work.drop.iter().map(|g| g.role.as_str()).collect();
        match client.batch_execute(&sql::access::drop_owned_sql(&roles)).await {
            Ok(()) => done.changes += 1,
            Err(e) => done.error = Some(e.into()),
        }
    }
    done
}

/// Visits one database: on the admin session when it is the admin database, otherwise on a
/// session of its own, closed when the visit ends (it must not keep the database from being
/// dropped).
async fn visit_database<'a>(
    spec: &TargetSpec,
    admin: &Client,
    limits: SessionLimits,
    database: &'a String,
    work: &Visit,
    primary: &str,
) -> (&'a String, Visited) {
    let done = if database == spec.admin_database() {
        visit(admin, work, primary).await
    } else {
        match spec.connect(database, limits).await {
            Ok(session) => visit(&session, work, primary).await,
            Err(e) => Visited { error: Some(e), ..Visited::default() },
        }
    };
    (database, done)
}

/// Carries out the cluster's access levels on the target (after its roles and databases), and
/// records each pending user's outcome. `client` is the pass's admin session. The levels are
/// read now, after the pass recorded its role and database outcomes, so that a user or database
/// found in conflict in this pass is left alone.
#[expect(clippy::too_many_arguments, reason = "the pass's parts, each needed here")]
pub(crate) async fn reconcile(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &Client,
    observed: &Observed,
    full: bool,
    databases: &[Database],
    pending: Vec<AccessProgress>,
) -> Result<AccessSummary, pgplane_core::Error> {
    let access = shared.store.access_for_pass(cluster.cluster_id, pending).await?;
    let inputs =
        Inputs::new(cluster, observed.version_num, observed.admin_is_superuser, full, &access, databases);
    if inputs.groups.is_empty() && access.pending.is_empty() {
        return Ok(AccessSummary::default());
    }
    let mut summary = AccessSummary::default();
    let result = carry_out(shared, &inputs, spec, client, &mut summary).await;
    if let Err(e) = result {
        summary.error.get_or_insert_with(|| e.to_string());
    }
    let message = summary.error.as_deref();
    let outcomes: Vec<(&str, i64, Option<&str>)> =
        access.pending.iter().map(|p| (p.name.as_str(), p.access_generation, message)).collect();
    shared.store.record_access(cluster.cluster_id, &outcomes).await?;
    if let Some(e) = &summary.error {
        tracing::warn!(cluster.id = %cluster.cluster_id, error = %e, "access levels not carried out");
    }
    Ok(summary)
}

/// Creates a group role in a transaction that commits only once its oid is recorded in the
/// metadata: whatever stands under the name later with another oid is not pgplane's. A role
/// that appeared under the name meanwhile is recorded as a conflict.
async fn create_group(
    shared: &Shared,
    inputs: &Inputs<'_>,
    client: &Client,
    group: &Group,
) -> Result<(), String> {
    let id = inputs.cluster.cluster_id;
    let created = async {
        client.batch_execute(&format!("BEGIN; {}", inputs.create_group_sql(group))).await?;
        let row = client
            .query_one("SELECT oid::int8 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&group.role])
            .await?;
        shared.store.record_access_group_oid(id, &group.role, row.get(0)).await.map_err(store_error)?;
        client.batch_execute("COMMIT").await?;
        Ok::<(), TargetError>(())
    }
    .await;
    let Err(e) = created else { return Ok(()) };
    // Nothing of it may stay (an aborted transaction would also hold the session).
    let _ = client.batch_execute("ROLLBACK").await;
    if e.sqlstate() != Some(sql::DUPLICATE_OBJECT) {
        return Err(e.to_string());
    }
    let message = conflict_message(group);
    shared
        .store
        .record_access_group_conflicts(id, &[(&group.role, Some(&message))])
        .await
        .map_err(|e| e.to_string())?;
    Err(message)
}

/// Observes, plans and applies; failures of single steps are kept in `summary` (the first
/// one) while the other steps go ahead; only a failure to observe stops it.
async fn carry_out(
    shared: &Shared,
    inputs: &Inputs<'_>,
    spec: &TargetSpec,
    client: &Client,
    summary: &mut AccessSummary,
) -> Result<(), TargetError> {
    let cluster = inputs.cluster;
    let id = cluster.cluster_id;
    let store = &shared.store;
    let facts = observe_groups(client, inputs).await?;
    let plan = plan(inputs, &facts);
    if let Some((_, blocked)) = plan.blocked.first() {
        failed(summary, blocked.clone());
    }
    let names: Vec<(&str, AccessLevel, &str)> =
        plan.record.iter().map(|g| (g.database.as_str(), g.level, g.role.as_str())).collect();
    store.record_access_groups(id, &names).await.map_err(store_error)?;
    let conflicts: Vec<(&str, Option<&str>)> =
        plan.conflicts.iter().map(|(g, m)| (g.role.as_str(), m.as_deref())).collect();
    store.record_access_group_conflicts(id, &conflicts).await.map_err(store_error)?;
    for (group, role) in &plan.rename {
        store.rename_access_group(id, &group.role, role).await.map_err(store_error)?;
    }
    for (group, oid) in &plan.adopt {
        store.record_access_group_oid(id, &group.role, *oid).await.map_err(store_error)?;
    }
    // Groups that could not be created get nothing: whatever stands under their names may be
    // someone else's.
    let mut unusable = BTreeSet::new();
    for group in &plan.create {
        match create_group(shared, inputs, client, group).await {
            Ok(()) => summary.changes += 1,
            Err(e) => {
                unusable.insert(group.role.as_str());
                failed(summary, e);
            }
        }
    }
    for (_, statement) in &plan.fix {
        match client.batch_execute(statement).await {
            Ok(()) => summary.changes += 1,
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    let primary = cluster.primary_user.as_str();
    let limits = shared.config.session_limits;
    let work: BTreeMap<&String, Visit> = plan
        .visits
        .iter()
        .map(|(database, visit)| {
            let usable = |g: &Group| !unusable.contains(g.role.as_str());
            let ensure = visit.ensure.iter().filter(|(g, _)| usable(g)).cloned().collect();
            (database, Visit { ensure, drop: visit.drop.clone() })
        })
        .filter(|(_, visit)| !visit.ensure.is_empty() || !visit.drop.is_empty())
        .collect();
    let visits: Vec<_> = work
        .iter()
        .map(|(database, work)| visit_database(spec, client, limits, database, work, primary))
        .collect();
    let visits: Vec<(&String, Visited)> =
        stream::iter(visits).buffer_unordered(VISITS_AT_ONCE).collect().await;
    let mut visited_ok = BTreeSet::new();
    // (kind, name, what, repaired)
    let mut drift: Vec<(ObjectKind, String, String, bool)> =
        plan.drift.iter().map(|(k, n, d)| (*k, n.clone(), d.clone(), true)).collect();
    for (database, done) in visits {
        summary.changes += done.changes;
        let repaired = done.error.is_none();
        drift.extend(done.drift.into_iter().map(|d| (ObjectKind::Database, database.clone(), d, repaired)));
        match done.error {
            None => {
                visited_ok.insert(database.as_str());
            }
            Some(e) => failed(summary, format!("database {database:?}: {e}")),
        }
    }
    for (role, statement, _) in &plan.memberships {
        if unusable.contains(role.as_str()) {
            continue;
        }
        match client.batch_execute(statement).await {
            Ok(()) => summary.changes += 1,
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    // A group whose database could not be visited keeps its privileges there: it stays, and
    // the next pass tries again.
    let droppable: Vec<&Group> = plan
        .drop
        .iter()
        .filter(|g| {
            !plan.visits.get(&g.database).is_some_and(|v| v.drop.contains(g))
                || visited_ok.contains(g.database.as_str())
        })
        .collect();
    let mut gone: Vec<&str> = plan.forget.iter().map(|g| g.role.as_str()).collect();
    for group in droppable {
        match client.batch_execute(&sql::roles::drop_role_sql(&group.role)).await {
            Ok(()) => {
                summary.changes += 1;
                gone.push(group.role.as_str());
            }
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    store.forget_access_groups(id, &gone).await.map_err(store_error)?;
    for (kind, name, found, repaired) in drift {
        let outcome = if repaired && summary.error.is_none() {
            Outcome::Applied
        } else {
            Outcome::Failed(String::new())
        };
        crate::pass::drift::report_drift(shared, cluster, kind, &name, &found, &outcome)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Keeps the first failure of a pass's access work.
fn failed(summary: &mut AccessSummary, message: String) {
    summary.error.get_or_insert(message);
}

fn store_error(e: pgplane_core::Error) -> TargetError {
    TargetError::Internal(format!("metadata store: {e}"))
}
