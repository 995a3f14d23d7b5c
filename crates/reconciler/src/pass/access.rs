//! The access phases of a pass, after the roles and databases: observes the groups and each
//! database with work (`look_into`, the preview's observation too), plans the phases with
//! `plan::pass::plan_access_phases` (the preview's own) and runs their operations. Group names
//! are recorded before their roles are created and each new role's oid before its CREATE ROLE
//! commits; fixes and memberships run on the admin session; each database where groups gain or
//! lose privileges is visited on a session of its own (a few at once), its statements sent in
//! one message. An operation's failure is kept as the levels' error and does not stop
//! unrelated work.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::stream::{self, StreamExt};
use pgplane_core::access::AccessLevel;
use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::{AccessProgress, Cluster, Database};
use tokio_postgres::Client;

use pgplane_target_server::plan::Phase;
use pgplane_target_server::{SessionLimits, TargetError, TargetSpec};

use crate::controller::Shared;
use crate::observe::access::{observe_database, observe_groups, observe_schemas};
use crate::observe::Observed;
use crate::plan::access::{conflict_message, plan, DatabaseFacts, Group, GroupFacts, Inputs};
use crate::plan::pass::{operations_in, plan_access_phases, Action, Seen};
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
    error: Option<TargetError>,
}

/// One database's share of the plan: its groups' privileges in one message (one implicit
/// transaction), then DROP OWNED for the groups to drop.
async fn visit(client: &Client, work: &DatabaseWork) -> Visited {
    let mut done = Visited::default();
    for part in [&work.ensure, &work.drop] {
        if part.is_empty() {
            continue;
        }
        match client.batch_execute(&part.join("; ")).await {
            Ok(()) => done.changes += 1,
            Err(e) => return Visited { error: Some(e.into()), ..done },
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
    work: &DatabaseWork,
) -> (&'a String, Visited) {
    let done = if database == spec.admin_database() {
        visit(admin, work).await
    } else {
        match spec.connect(database, limits).await {
            Ok(session) => visit(&session, work).await,
            Err(e) => Visited { error: Some(e), ..Visited::default() },
        }
    };
    (database, done)
}

/// One database's statements from the plan's `access_privileges` phase.
#[derive(Default)]
struct DatabaseWork {
    ensure: Vec<String>,
    drop: Vec<String>,
    /// Drift found on groups that existed before the pass.
    drift: Vec<String>,
}

/// What a database shows: what pgplane's existing groups lack there, and its schemas (what a
/// group created in the pass lacks there).
type Looked = (DatabaseFacts, Vec<(String, bool, bool)>);

/// Observes, in each database where the access levels have work, what pgplane's groups lack
/// there and its schemas: a few databases at once, each on a session of its own closed after
/// (the admin database on the admin session). The preview and the pass both observe with it.
pub(super) async fn look_into(
    spec: &TargetSpec,
    admin: &Client,
    limits: SessionLimits,
    inputs: &Inputs<'_>,
    groups: &HashMap<String, GroupFacts>,
) -> Vec<(String, Result<Looked, TargetError>)> {
    let work = plan(inputs, groups).visits;
    let primary = inputs.cluster.primary_user.as_str();
    let mut visits = Vec::new();
    for (database, visit) in work {
        if visit.ensure.is_empty() {
            continue;
        }
        let existing: Vec<(Group, bool)> = visit.ensure.into_iter().filter(|(_, new)| !new).collect();
        visits.push(look_in(spec, admin, limits, database, existing, primary));
    }
    stream::iter(visits).buffer_unordered(VISITS_AT_ONCE).collect().await
}

/// Looks into `database`: on the admin session when it is the admin database, otherwise on a
/// session of its own, closed after.
async fn look_in(
    spec: &TargetSpec,
    admin: &Client,
    limits: SessionLimits,
    database: String,
    existing: Vec<(Group, bool)>,
    primary: &str,
) -> (String, Result<Looked, TargetError>) {
    let found = if database == spec.admin_database() {
        look(admin, &existing, primary).await
    } else {
        match spec.connect(&database, limits).await {
            Ok(session) => look(&session, &existing, primary).await,
            Err(e) => Err(e),
        }
    };
    (database, found)
}

/// What one database shows: what pgplane's `existing` groups lack there, and its schemas.
async fn look(client: &Client, existing: &[(Group, bool)], primary: &str) -> Result<Looked, TargetError> {
    let facts = if existing.is_empty() {
        DatabaseFacts::default()
    } else {
        observe_database(client, existing, primary).await?
    };
    Ok((facts, observe_schemas(client).await?))
}

/// Carries out the cluster's access levels on the target (after its roles and databases), and
/// records each pending user's outcome. `client` is the pass's admin session. The levels are
/// read now, after the pass recorded its role and database outcomes, so that a user or database
/// found in conflict in this pass is left alone; not at all when the cluster had none granted
/// and no group recorded as the pass started (`has_access`) and no user's levels wait.
#[expect(clippy::too_many_arguments, reason = "the pass's parts, each needed here")]
pub(crate) async fn reconcile(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &Client,
    observed: &Observed,
    full: bool,
    databases: &[Database],
    has_access: bool,
    pending: Vec<AccessProgress>,
) -> Result<AccessSummary, pgplane_core::Error> {
    if !has_access && pending.is_empty() {
        // No levels granted, no groups recorded, none waiting: nothing to read or do.
        return Ok(AccessSummary::default());
    }
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

/// Creates a group role (`create`: the plan's statement) in a transaction that commits only
/// once its oid is recorded in the metadata: whatever stands under the name later with another
/// oid is not pgplane's. A role that appeared under the name meanwhile is recorded as a
/// conflict.
async fn create_group(
    shared: &Shared,
    inputs: &Inputs<'_>,
    client: &Client,
    group: &Group,
    create: &str,
) -> Result<(), String> {
    let id = inputs.cluster.cluster_id;
    let created = async {
        client.batch_execute(&format!("BEGIN; {create}")).await?;
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

/// Observes (the groups on the admin session, then each database with work), plans the access
/// phases with [`plan_access_phases`] (the preview's own) and runs them in order; failures of
/// single operations are kept in `summary` (the first one) while the others go ahead; only a
/// failure to observe the groups stops it.
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
    let limits = shared.config.session_limits;
    let primary = cluster.primary_user.as_str();

    // Observe, then plan.
    let groups = observe_groups(client, inputs).await?;
    let looked = look_into(spec, client, limits, inputs, &groups).await;
    let mut seen = Seen { admin_database: spec.admin_database().to_string(), groups, ..Seen::default() };
    // Databases that could not be observed are not visited.
    let mut unseen: BTreeMap<String, TargetError> = BTreeMap::new();
    for (database, found) in looked {
        match found {
            Ok((facts, schemas)) => {
                seen.in_databases.insert(database.clone(), facts);
                seen.schemas.insert(database, schemas);
            }
            Err(e) => {
                unseen.insert(database, e);
            }
        }
    }
    let (plan, phases) = plan_access_phases(inputs, &seen, primary);
    let operations = |phase| operations_in(&phases, phase).collect::<Vec<_>>();

    // Record the groups' names, conflicts, renames and adopted oids before any is created.
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

    // access_groups. Groups that could not be created get nothing: whatever stands under
    // their names may be someone else's.
    let mut unusable = BTreeSet::new();
    for op in operations(Phase::AccessGroups) {
        let statements = op.step.statements.iter().map(|s| s.sql.as_str());
        match &op.action {
            Action::CreateGroup(group) => {
                let create = statements.collect::<Vec<_>>().join("; ");
                match create_group(shared, inputs, client, group, &create).await {
                    Ok(()) => summary.changes += 1,
                    Err(e) => {
                        unusable.insert(group.role.clone());
                        failed(summary, e);
                    }
                }
            }
            Action::FixGroup => {
                for statement in statements {
                    match client.batch_execute(statement).await {
                        Ok(()) => summary.changes += 1,
                        Err(e) => failed(summary, TargetError::from(e).to_string()),
                    }
                }
            }
            _ => {}
        }
    }

    // access_privileges: each database's statements in one visit, a few databases at once.
    let mut work: BTreeMap<String, DatabaseWork> = BTreeMap::new();
    for op in operations(Phase::AccessPrivileges) {
        let Some(first) = op.step.statements.first() else { continue };
        let database = first.database.clone().unwrap_or_else(|| seen.admin_database.clone());
        let statements = op.step.statements.iter().map(|s| s.sql.clone());
        match &op.action {
            Action::Privileges { group, found } if !unusable.contains(&group.role) => {
                let w = work.entry(database).or_default();
                w.ensure.extend(statements);
                w.drift.extend(found.iter().cloned());
            }
            Action::DropOwned(_) => work.entry(database).or_default().drop.extend(statements),
            _ => {}
        }
    }
    let mut visited_ok = BTreeSet::new();
    // (kind, name, what, repaired)
    let mut drift: Vec<(ObjectKind, String, String, bool)> =
        plan.drift.iter().map(|(k, n, d)| (*k, n.clone(), d.clone(), true)).collect();
    for (database, e) in &unseen {
        work.remove(database);
        failed(summary, format!("database {database:?}: {e}"));
    }
    let visits: Vec<_> =
        work.iter().map(|(database, work)| visit_database(spec, client, limits, database, work)).collect();
    let visits: Vec<(&String, Visited)> =
        stream::iter(visits).buffer_unordered(VISITS_AT_ONCE).collect().await;
    for (database, done) in visits {
        summary.changes += done.changes;
        let repaired = done.error.is_none();
        let found = work.get(database).map(|w| w.drift.clone()).unwrap_or_default();
        drift.extend(found.into_iter().map(|d| (ObjectKind::Database, database.clone(), d, repaired)));
        match done.error {
            None => {
                visited_ok.insert(database.clone());
            }
            Some(e) => failed(summary, format!("database {database:?}: {e}")),
        }
    }

    // access_members.
    for op in operations(Phase::AccessMembers) {
        let Action::Membership { role } = &op.action else { continue };
        if unusable.contains(role) {
            continue;
        }
        for statement in &op.step.statements {
            match client.batch_execute(&statement.sql).await {
                Ok(()) => summary.changes += 1,
                Err(e) => failed(summary, TargetError::from(e).to_string()),
            }
        }
    }

    // access_cleanup. A group whose database could not be visited keeps its privileges there:
    // it stays, and the next pass tries again.
    let mut gone: Vec<&str> = plan.forget.iter().map(|g| g.role.as_str()).collect();
    for op in operations(Phase::AccessCleanup) {
        let Action::DropGroup(group) = &op.action else { continue };
        let visited = !plan.visits.get(&group.database).is_some_and(|v| v.drop.contains(group))
            || visited_ok.contains(&group.database);
        if !visited {
            continue;
        }
        let sql = op.step.statements.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>().join("; ");
        match client.batch_execute(&sql).await {
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
