//! Running the plan's role and database phases, in the plan's order: roles to create or fix
//! (pipelined, the primary user first), databases (the drops at once, the rest one at a time),
//! then roles to drop (their heirs checked and what they own found at drop time). Statements
//! are built from each operation's step with the real verifier. New objects are claimed
//! before they are created; each outcome is concluded in the ledger and drift reported as it
//! is found.

use pgplane_core::heirs::{may_inherit, Candidate};
use pgplane_core::lifecycle::{Lifecycle, ObjectKind, Outcome};
use pgplane_core::model::{Cluster, Database};
use pgplane_core::store::Mark;
use std::collections::HashMap;

use pgplane_target_server::{TargetError, TargetSpec};
use tokio_postgres::Client;

use super::apply;
use super::drift::report_drift;
use super::outcomes::{conclude, outcome_of, Ledger, Record};
use super::RoleItem;
use crate::controller::Shared;
use crate::observe::Observed;
use crate::plan::drift::{database_drift, role_drift};
use crate::plan::{admin_membership, heir_of, inheriting, Step};
use crate::sql;

/// Creates and fixes the roles that should exist: claims the new ones first (one statement),
/// then runs every step pipelined on one session. Returns whether the session can be reused.
pub(super) async fn apply_roles<'a>(
    shared: &Shared,
    cluster: &Cluster,
    sessions: &[&Client],
    observed: &Observed,
    planned: &[(&'a RoleItem, Step)],
    ledger: &mut Ledger<'a>,
) -> Result<Vec<bool>, pgplane_core::Error> {
    let claims = |alternate: bool| -> Vec<&str> {
        planned
            .iter()
            .filter(|(r, step)| {
                matches!(step, Step::CreateRole { .. }) && !r.desired.claimed && r.alternate == alternate
            })
            .map(|(r, _)| r.desired.name.as_str())
            .collect()
    };
    shared.store.mark(cluster.cluster_id, Mark::Claimed(ObjectKind::User), &claims(false)).await?;
    shared.store.mark(cluster.cluster_id, Mark::AlternateClaimed, &claims(true)).await?;
    let statements: Vec<(usize, String)> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, (r, step))| {
            sql::roles::role_sql(&r.desired.name, &r.desired.verifier, step).map(|sql| (i, sql))
        })
        .collect();
    // The primary user first, on its own: databases are owned by it and the other roles'
    // ADMIN OPTION is granted to it.
    let quiet = observed.admin_is_superuser;
    let primary_first = planned.first().is_some_and(|(r, _)| r.desired.primary)
        && statements.first().is_some_and(|(i, _)| *i == 0);
    let (first, rest) = statements.split_at(usize::from(primary_first));
    let sql = |part: &[(usize, String)]| part.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>();
    let (mut results, mut clean) = apply::run_spread(&sessions[..1], &sql(first), quiet).await;
    let (more, more_clean) = apply::run_spread(sessions, &sql(rest), quiet).await;
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
            (Step::CreateRole { .. }, Err(e)) if sql::role_name_taken(&e) => {
                Err(StepError::Conflict(appeared("role", &role.name)))
            }
            (_, other) => other.map_err(StepError::from),
        };
        let outcome = match (outcome_of(step, result), role.withheld) {
            (Outcome::Applied, Some(why)) => {
                // A failure is not recorded over a generation already applied: say it apart.
                shared.store.note_user_error(cluster.cluster_id, &role.name, why).await?;
                Outcome::Failed(why.to_string())
            }
            (outcome, _) => outcome,
        };
        // (REPLICATION withheld is not drift: the user's error says why it went.)
        if item.watched && role.withheld.is_none() {
            if let Some(found) = role_drift(role, step, observed) {
                let found =
                    if item.alternate { format!("its login {:?}: {found}", role.name) } else { found };
                report_drift(shared, cluster, ObjectKind::User, &item.user.name, &found, &outcome).await?;
            }
        }
        conclude_role(cluster, ledger, item, step, outcome);
    }
    Ok(clean)
}

/// Concludes a role's step on its user's record. An alternate login's outcome counts only when
/// it is worse than its user's (see `outcomes::conclude`), and a role of that name found on the
/// target fails the user's rotation rather than putting the user itself in conflict.
fn conclude_role<'a>(
    cluster: &Cluster,
    ledger: &mut Ledger<'a>,
    item: &'a RoleItem,
    step: &Step,
    outcome: Outcome,
) {
    let outcome = match outcome {
        Outcome::Conflict(m) if item.alternate => Outcome::Failed(m),
        other => other,
    };
    let twice = item.user.alternate_login.is_some();
    conclude(cluster, ledger, Record::of_user(&item.user), step, outcome, twice);
}

/// Drops the roles whose step is DropRole, together, and concludes every role that should be
/// gone.
pub(super) async fn drop_roles<'a>(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &Client,
    observed: &Observed,
    planned: &[(&'a RoleItem, Step)],
    ledger: &mut Ledger<'a>,
) -> Result<(), pgplane_core::Error> {
    let (drops, others): (Vec<_>, Vec<_>) =
        planned.iter().partition(|(_, step)| matches!(step, Step::DropRole { .. }));
    for (item, step) in others {
        conclude_role(cluster, ledger, item, step, outcome_of(step, Ok(())));
    }
    if drops.is_empty() {
        return Ok(());
    }
    let gone = missing_heirs(client, cluster, &drops).await.map_err(TargetError::from);
    let gone = match gone {
        Ok(gone) => gone,
        Err(e) => {
            for (item, step) in drops {
                let outcome = outcome_of(step, Err(e.clone().into()));
                conclude_role(cluster, ledger, item, step, outcome);
            }
            return Ok(());
        }
    };
    // An heir that is gone (or goes in this pass) cannot inherit: the primary user does, and
    // the deleted user's record says so.
    let heir_for = |step| inheriting(step, &gone, &cluster.primary_user);
    for (item, step) in &drops {
        if let Some(heir) = heir_of(step).filter(|h| gone.iter().any(|g| g == h)) {
            let found =
                format!("its heir {heir:?} is gone from the target; what it owned goes to the primary user");
            tracing::warn!(cluster.id = %cluster.cluster_id, name = %item.desired.name, "{found}");
            shared
                .store
                .record_drift(cluster.cluster_id, ObjectKind::User, &item.desired.name, &found, true)
                .await?;
        }
    }
    // One round per heir: REASSIGN OWNED takes one.
    let mut heirs: Vec<&str> = drops.iter().filter_map(|(_, step)| heir_for(step)).collect();
    heirs.sort_unstable();
    heirs.dedup();
    for heir in heirs {
        let group: Vec<&(&RoleItem, Step)> =
            drops.iter().copied().filter(|(_, s)| heir_for(s) == Some(heir)).collect();
        let names: Vec<&str> = group.iter().map(|(i, _)| i.desired.name.as_str()).collect();
        let limits = shared.config.session_limits;
        let results = apply::drop_roles(client, spec, limits, &names, heir, admin_membership(observed)).await;
        for ((item, step), result) in group.into_iter().zip(results) {
            let outcome = outcome_of(step, result.map_err(Into::into));
            conclude_role(cluster, ledger, item, step, outcome);
        }
    }
    Ok(())
}

/// The heirs named by `drops` (the primary user aside) that cannot inherit: no role of that
/// name is on the target, or it is dropped in this pass too.
async fn missing_heirs(
    client: &Client,
    cluster: &Cluster,
    drops: &[&(&RoleItem, Step)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let dropped: Vec<&str> = drops.iter().map(|(i, _)| i.desired.name.as_str()).collect();
    let named: Vec<(&str, &str)> = drops
        .iter()
        .filter_map(|(i, step)| Some((i.desired.name.as_str(), heir_of(step)?)))
        .filter(|(_, h)| *h != cluster.primary_user)
        .collect();
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let heirs: Vec<&str> = named.iter().map(|(_, h)| *h).collect();
    let present: Vec<String> = client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)", &[&heirs])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let candidate =
        |h: &str| Candidate { present: !dropped.contains(&h), on_target: present.iter().any(|p| p == h) };
    Ok(named
        .into_iter()
        .filter(|(deleted, h)| may_inherit(deleted, h, Some(candidate(h))).is_err())
        .map(|(_, h)| h.to_string())
        .collect())
}

/// Creates, fixes and drops the databases: claims the new ones first (one statement). The
/// drops go at once, spread over the pass's `sessions` (each DROP DATABASE waits for a
/// checkpoint, which drops under way together share); then the creations, spread the same way
/// (each copies a template, work the server's cores share); then the other steps one at a time
/// on the first session. On a shared server a new database is closed to PUBLIC (`closing`, by
/// name, from the plan) before its creation is recorded. The outcomes of each group are
/// recorded together, once all of its statements have ended, before the next group touches the
/// target; the other steps' one at a time.
pub(super) async fn apply_databases<'a>(
    shared: &Shared,
    cluster: &Cluster,
    sessions: &[&Client],
    observed: &Observed,
    planned: &[(&'a Database, Step)],
    closing: &HashMap<&str, String>,
    ledger: &mut Ledger<'a>,
) -> Result<(), pgplane_core::Error> {
    // No database step: the target is not touched, and the outcomes so far wait for the next
    // phase that touches it, or go with the pass's end (one statement fewer per pass).
    if planned.is_empty() {
        return Ok(());
    }
    let claims: Vec<&str> = planned
        .iter()
        .filter(|(db, step)| matches!(step, Step::CreateDatabase { .. }) && !db.claimed)
        .map(|(db, _)| db.name.as_str())
        .collect();
    shared.store.mark(cluster.cluster_id, Mark::Claimed(ObjectKind::Database), &claims).await?;
    let (drops, others): (Vec<_>, Vec<_>) =
        planned.iter().partition(|(_, step)| matches!(step, Step::DropDatabase));
    let dropped = run_spread_steps(sessions, &drops).await;
    for ((db, step), result) in drops.into_iter().zip(dropped) {
        conclude_database(
            shared,
            cluster,
            observed,
            db,
            step,
            outcome_of(step, result.map_err(Into::into)),
            ledger,
        )
        .await?;
    }
    ledger.flush(shared, cluster.cluster_id).await?;
    let (creations, others): (Vec<_>, Vec<_>) =
        others.into_iter().partition(|(_, step)| matches!(step, Step::CreateDatabase { .. }));
    let created = run_spread_steps(sessions, &creations).await;
    let client = sessions[0];
    let mut closed: Vec<&str> = Vec::new();
    for ((db, step), result) in creations.into_iter().zip(created) {
        let result = match result {
            Err(e) if sql::name_taken(&e, sql::DUPLICATE_DATABASE) => {
                Err(StepError::Conflict(appeared("database", &db.name)))
            }
            Err(e) => Err(e.into()),
            Ok(()) => match closing.get(db.name.as_str()) {
                None => Ok(()),
                Some(sql) => match client.batch_execute(sql).await {
                    Ok(()) => {
                        closed.push(&db.name);
                        Ok(())
                    }
                    Err(e) => Err(StepError::Target(e.into())),
                },
            },
        };
        conclude_database(shared, cluster, observed, db, step, outcome_of(step, result), ledger).await?;
    }
    // The databases closed to PUBLIC are marked so, in one statement, before their creations
    // are recorded.
    shared.store.mark(cluster.cluster_id, Mark::ClosedToPublic, &closed).await?;
    ledger.flush(shared, cluster.cluster_id).await?;
    for (db, step) in others {
        let result = match sql::databases::database_sql(&db.name, step) {
            None => Ok(()),
            Some(sql) => apply::run_database_step(client, &sql).await.map_err(Into::into),
        };
        conclude_database(shared, cluster, observed, db, step, outcome_of(step, result), ledger).await?;
        ledger.flush(shared, cluster.cluster_id).await?;
    }
    Ok(())
}

/// Runs database steps that are one statement each (creations, drops) at once, spread over
/// `sessions`; their results, in order.
async fn run_spread_steps(
    sessions: &[&Client],
    steps: &[&(&Database, Step)],
) -> Vec<Result<(), TargetError>> {
    let statements: Vec<String> = steps
        .iter()
        .map(|(db, step)| {
            sql::databases::database_sql(&db.name, step).expect("a creation or a drop is a statement")
        })
        .collect();
    apply::run_spread(sessions, &statements, false).await.0
}

/// Concludes a database step: the drift it repaired is reported, its outcome goes into the
/// ledger (written by the caller's next flush).
async fn conclude_database<'a>(
    shared: &Shared,
    cluster: &Cluster,
    observed: &Observed,
    db: &'a Database,
    step: &Step,
    outcome: Outcome,
    ledger: &mut Ledger<'a>,
) -> Result<(), pgplane_core::Error> {
    if db.watched_for_drift() {
        if let Some(found) = database_drift(&db.name, step, observed) {
            report_drift(shared, cluster, ObjectKind::Database, &db.name, &found, &outcome).await?;
        }
    }
    conclude(cluster, ledger, Record::of_database(db), step, outcome, false);
    Ok(())
}

/// Why applying a step did not succeed.
pub(super) enum StepError {
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
