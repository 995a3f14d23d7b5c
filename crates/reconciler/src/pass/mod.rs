//! One reconcile pass over one cluster: load desired state (every object on a resync, the
//! changed ones otherwise, reading databases and pending access levels only when the
//! cluster's row says some wait; the cluster itself as the pass before left it, when that one
//! found this one due), connect and observe the target (`connect`), plan the pass with
//! `plan::pass::plan_pass` (the value the preview renders) and execute its phases in order
//! (roles and databases: `steps`, running statements with `apply`; the primary user's
//! memberships: `primary`; database rights on shared servers: `rights`; access levels, planned
//! by the same function once roles and databases are in place: `access`; then roles to drop),
//! report drift (`drift`), record the outcomes before the target is touched again
//! (`outcomes`) and end the pass with the last of them, scheduling a retry with backoff
//! (`pgplane_core::lifecycle::backoff`) when anything failed. `preview` observes everything
//! first and renders the same plan for the API.

mod access;
mod apply;
mod connect;
pub(crate) mod drift;
mod outcomes;
mod powers;
pub(crate) mod preview;
mod primary;
mod rights;
mod steps;

use chrono::{DateTime, Utc};
use pgplane_core::lifecycle::{backoff, Lifecycle, Outcome};
use pgplane_core::model::{AccessProgress, Cluster, Database, User};
use pgplane_core::store::{Finished, ObjectOutcome, PassCluster, PassRead};
use pgplane_target_server::plan::Phase;
use pgplane_target_server::TargetError;
use uuid::Uuid;

use crate::controller::Shared;
use crate::plan::access::Inputs;
use crate::plan::pass::{plan_pass, PassPlan, Seen, Wanted, WantedDatabase, WantedRole};
use crate::plan::{DesiredDatabase, DesiredRole, Step};
pub(crate) use connect::Hold;
use connect::{open, prepare, record_unopened, Opened, Unopened};
use outcomes::{Ledger, Record};
use steps::{apply_databases, apply_roles, drop_roles};

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PassEnd {
    /// The target was reached and observed, and the steps were applied (some may have failed,
    /// each recorded on its object).
    Reached,
    /// The target could not be reached, observed or trusted: the error is recorded on the
    /// cluster and on every object not in sync.
    #[default]
    Unreachable,
    /// Nothing was left to do: the target was not contacted.
    Idle,
    /// The cluster no longer exists.
    Gone,
}

impl PassEnd {
    /// The word for it in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            PassEnd::Reached => "reached",
            PassEnd::Unreachable => "unreachable",
            PassEnd::Idle => "idle",
            PassEnd::Gone => "gone",
        }
    }
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
    pub end: PassEnd,
    /// Another pass is due at once.
    pub again: bool,
}

impl PassSummary {
    /// This summary, ended as `end`, or as gone when ending it found the cluster deleted; with
    /// the cluster the next pass starts from when it is due at once.
    fn ended(mut self, end: PassEnd, next: Finished) -> Ended {
        self.end = if matches!(next, Finished::Gone) { PassEnd::Gone } else { end };
        self.again = matches!(next, Finished::Again(_));
        Ended { summary: self, next: if let Finished::Again(cluster) = next { Some(cluster) } else { None } }
    }
}

/// A pass's end: what it did, and the cluster the next pass starts from when one is due at
/// once (see [`run_pass`]).
pub(crate) struct Ended {
    pub summary: PassSummary,
    pub next: Option<Box<PassCluster>>,
}

impl From<PassSummary> for Ended {
    fn from(summary: PassSummary) -> Self {
        Ended { summary, next: None }
    }
}

/// A role of the pass with the desired state and bookkeeping needed to record its outcome.
struct RoleItem {
    desired: DesiredRole,
    user: User,
    /// The user's alternate login (a rotation's second role), not its own role.
    alternate: bool,
    /// A step it needs is drift: it was in sync and nothing changed on pgplane's side since,
    /// not even the end of a rotation's grace.
    watched: bool,
}

/// Runs one pass over `cluster_id`: a full one when `force_full` or when the cluster's resync
/// is due, otherwise one over the objects whose desired state changed. It starts from the
/// cluster as the pass before read it when it ended (`carried`, when that pass found this one
/// due at once), or reads it. `hold` is what the passes under the same hold of the cluster's
/// lock did once already. Errors are recorded in the store, not returned: the returned error
/// is only for failures of the metadata store.
pub(crate) async fn run_pass(
    shared: &Shared,
    cluster_id: Uuid,
    force_full: bool,
    carried: Option<Box<PassCluster>>,
    hold: &mut Hold,
) -> Result<Ended, pgplane_core::Error> {
    let found = match carried {
        Some(cluster) => Some(*cluster),
        None => shared.store.cluster_for_pass(cluster_id, shared.config.resync_interval).await?,
    };
    let Some(PassCluster {
        cluster,
        resync_due,
        read_at,
        shares_server,
        has_access,
        access_waits,
        databases_changed,
    }) = found
    else {
        return Ok(PassSummary { end: PassEnd::Gone, ..PassSummary::default() }.into());
    };
    let full = force_full || resync_due;
    let store = &shared.store;
    let objects = async {
        if full {
            store.cluster_objects(cluster_id).await
        } else {
            store.changed_objects(cluster_id, databases_changed).await
        }
    };
    let pending = async {
        if full || access_waits {
            access::pending(shared, &cluster).await
        } else {
            Ok(Vec::new())
        }
    };
    let ((users, databases), pending_access) = tokio::try_join!(objects, pending)?;
    let summary =
        PassSummary { users: users.len(), databases: databases.len(), full, ..PassSummary::default() };
    let read =
        PassRead { at: read_at, unseen_from: unseen_from(read_at, &users, &databases, &pending_access) };
    if !full && users.is_empty() && databases.is_empty() && pending_access.is_empty() {
        // Whatever bumped the generation is applied already.
        return Ok(
            summary.ended(PassEnd::Idle, finish(shared, &cluster, &[], Some(read), false, None, None).await?)
        );
    }

    let (spec, mut roles, unopened) = match prepare(&shared.credentials, &cluster, users, read_at) {
        Ok(p) => p,
        Err(e) => return fail_pass(shared, &cluster, summary, &databases, &[], &e).await,
    };
    let unopened_error = record_unopened(shared, &cluster, &unopened).await?;
    let allowed = shared.config.allow_replication_for_sole_tenants;
    powers::withhold_replication(&shared.store, allowed, &cluster, &mut roles).await?;
    let Opened { spec, pool, client, observed } =
        match open(shared, &cluster, spec, &roles, &databases, hold).await {
            Ok(opened) => opened,
            Err(e) => return fail_pass(shared, &cluster, summary, &databases, &roles, &e).await,
        };
    connect::hold_waiting_parameters(&mut roles, &observed, &cluster.primary_user);

    // What else the plan needs to know: the primary user's foreign memberships (observed with
    // its roles), and on a shared server the rights on the cluster's databases.
    let primary_grants = primary::foreign_of(&observed, primary_alternate(&roles, &cluster.primary_user));
    let shared_rights = match rights::observe_shared(
        &shared.store,
        &client,
        &cluster,
        &observed,
        Some(shares_server),
    )
    .await
    {
        Ok(found) => found,
        Err(e) => return fail_pass(shared, &cluster, summary, &databases, &roles, &e).await,
    };

    // Plan the roles, the primary user, databases and their rights (the access phases are
    // planned once those are in place, see `access`), then run the phases in the plan's order.
    let mut ledger = Ledger::starting_with(unopened_error);
    let seen = Seen {
        observed: Some(&observed),
        admin_database: spec.admin_database().to_string(),
        primary_grants,
        rights: shared_rights,
        ..Seen::default()
    };
    let plan = plan_pass(&wanted(&cluster, &roles, &unopened, &databases, None), &seen);
    let mut role_phases = objects_of(&plan, &[Phase::Roles, Phase::DropRoles], &roles).into_iter();
    let (present, absent) = (role_phases.next().unwrap_or_default(), role_phases.next().unwrap_or_default());
    let role_steps = present.iter().filter(|(_, step)| step.changes_target()).count();
    let planned_databases = objects_of(&plan, &[Phase::Databases], &databases).pop().unwrap_or_default();
    let spread = |f: fn(&Step) -> bool| planned_databases.iter().filter(|(_, step)| f(step)).count();
    let drops = spread(|step| matches!(step, Step::DropDatabase));
    let creations = spread(|step| matches!(step, Step::CreateDatabase { .. }));
    let sessions = connect::sessions(&pool, client, role_steps.max(drops).max(creations), &observed).await;
    let clients = sessions.clients();
    let restored = apply_roles(shared, &cluster, &clients, &observed, &present, &mut ledger).await?;
    sessions.set_restored(restored);
    primary::revoke_foreign(shared, &cluster, clients[0], observed.version_num, &plan, &mut ledger).await?;
    // The roles' outcomes are recorded before the pass touches the target again, or with its end.
    let later = [Phase::Databases, Phase::DatabaseRights].iter().any(|p| !plan.steps(*p).is_empty())
        || has_access
        || !pending_access.is_empty()
        || !absent.is_empty();
    if later {
        ledger.flush(shared, cluster_id).await?;
    }
    let closing = plan.closings(|i| databases[i].name.as_str());
    apply_databases(shared, &cluster, &clients, &observed, &planned_databases, &closing, &mut ledger).await?;
    rights::apply(shared, &cluster, clients[0], &plan, &mut ledger).await?;
    let access = access::reconcile(
        shared,
        &cluster,
        &spec,
        clients[0],
        &observed,
        full,
        &databases,
        has_access,
        pending_access,
    )
    .await?;
    ledger.changes += access.changes;
    ledger.first_error = ledger.first_error.or(access.error);
    drop_roles(shared, &cluster, &spec, clients[0], &observed, &absent, &mut ledger).await?;
    let last = ledger.take_for_end(shared, &cluster).await?;

    shared.stats.ddl_steps.fetch_add(ledger.changes as u64, std::sync::atomic::Ordering::Relaxed);
    let version = Some((observed.version_num, observed.version.as_str()));
    let error = ledger.first_error.as_deref();
    let next = finish(shared, &cluster, &last, Some(read), full, version, error).await?;
    Ok(PassSummary { changes: ledger.changes, ..summary }.ended(PassEnd::Reached, next))
}

/// The earliest time a write could begin and not be among what a pass loaded: the pass read
/// the cluster at `read_at` and its objects after that, so a write that began later was seen
/// only if it committed in between, and then the pass holds its row, written at the write's
/// start (`updated_at`). Just after the latest such row, or `read_at`.
fn unseen_from(
    read_at: DateTime<Utc>,
    users: &[User],
    databases: &[Database],
    access: &[AccessProgress],
) -> DateTime<Utc> {
    let written = users.iter().map(|u| u.updated_at);
    let written =
        written.chain(databases.iter().map(|d| d.updated_at)).chain(access.iter().map(|a| a.updated_at));
    written.map(|at| at + chrono::Duration::microseconds(1)).fold(read_at, DateTime::max)
}

/// The primary user's second login (a rotation's), when the pass has it.
fn primary_alternate<'a>(roles: &'a [RoleItem], primary_user: &str) -> Option<&'a str> {
    roles.iter().find(|r| r.desired.acts_as.as_deref() == Some(primary_user)).map(|r| r.desired.name.as_str())
}

/// The objects (`Wanted::roles` or `Wanted::databases`, the same order) of each of the plan's
/// `phases`, with their steps in the plan's order. Those in none (in sync: they have no
/// operation) follow the first phase's, so that their outcomes are recorded too.
fn objects_of<'a, T>(plan: &PassPlan, phases: &[Phase], objects: &'a [T]) -> Vec<Vec<(&'a T, Step)>> {
    let mut in_sync = vec![true; objects.len()];
    let mut by_phase = Vec::with_capacity(phases.len());
    for phase in phases {
        let mut planned = Vec::new();
        for (i, step) in plan.steps(*phase) {
            in_sync[i] = false;
            planned.push((&objects[i], step.clone()));
        }
        by_phase.push(planned);
    }
    if let Some(first) = by_phase.first_mut() {
        first.extend(objects.iter().zip(in_sync).filter(|(_, s)| *s).map(|(o, _)| (o, Step::InSync)));
    }
    by_phase
}

/// What pgplane wants on the target, as the pass and the preview hand it to [`plan_pass`]:
/// `Wanted::roles[i]` is `roles[i]`, `Wanted::databases[i]` is `databases[i]`.
fn wanted<'a>(
    cluster: &'a Cluster,
    roles: &'a [RoleItem],
    unopened: &[Unopened],
    databases: &[Database],
    access: Option<&'a Inputs<'a>>,
) -> Wanted<'a> {
    Wanted {
        primary_user: &cluster.primary_user,
        roles: roles.iter().map(|r| WantedRole { desired: &r.desired, watched: r.watched }).collect(),
        left_out: unopened.iter().map(|u| (u.user.name.clone(), u.reason.clone())).collect(),
        databases: databases
            .iter()
            .map(|db| WantedDatabase {
                desired: DesiredDatabase { name: db.name.clone(), state: db.desired(), claimed: db.claimed },
                watched: db.watched_for_drift(),
            })
            .collect(),
        access,
    }
}

/// Ends a pass that could not reach the target: every object not yet in sync carries the
/// error, and the cluster is retried with backoff.
async fn fail_pass(
    shared: &Shared,
    cluster: &Cluster,
    summary: PassSummary,
    databases: &[Database],
    roles: &[RoleItem],
    error: &TargetError,
) -> Result<Ended, pgplane_core::Error> {
    let message = error.to_string();
    tracing::warn!(cluster.id = %cluster.cluster_id, error = %message, "reconcile pass failed");
    let outcomes: Vec<ObjectOutcome<'_>> = roles
        .iter()
        .map(|r| Record::of_user(&r.user))
        .chain(databases.iter().map(Record::of_database))
        .filter(|r| r.object.awaits_apply())
        .map(|r| ObjectOutcome {
            kind: r.kind,
            name: r.name,
            generation: r.object.generation(),
            outcome: Outcome::Failed(message.clone()),
        })
        .collect();
    shared.store.record_outcomes(cluster.cluster_id, &outcomes).await?;
    shared.store.fail_pending_access(cluster.cluster_id, &message).await?;
    let next = finish(shared, cluster, &[], None, summary.full, None, Some(&message)).await?;
    Ok(summary.ended(PassEnd::Unreachable, next))
}

/// Ends a pass that had to be abandoned (it ran past its deadline), so that the cluster is
/// retried with backoff.
pub(crate) async fn fail_unfinished(
    shared: &Shared,
    cluster_id: Uuid,
    message: &str,
) -> Result<Ended, pgplane_core::Error> {
    let summary = PassSummary::default();
    Ok(match shared.store.cluster_by_id(cluster_id).await? {
        Some(cluster) => summary.ended(
            PassEnd::Unreachable,
            finish(shared, &cluster, &[], None, false, None, Some(message)).await?,
        ),
        None => summary.ended(PassEnd::Gone, Finished::Gone),
    })
}

/// Ends a pass in the store: records its last users' `outcomes` and its result (with the users
/// that had expired when it read the cluster, `read`, their sessions ended, when it succeeded)
/// and when the cluster is due again, and announces it (with the time from which writes were
/// unseen, when known).
async fn finish(
    shared: &Shared,
    cluster: &Cluster,
    outcomes: &[ObjectOutcome<'_>],
    read: Option<PassRead>,
    full: bool,
    version: Option<(i32, &str)>,
    error: Option<&str>,
) -> Result<Finished, pgplane_core::Error> {
    let retry_at = Utc::now()
        + chrono::Duration::from_std(backoff(cluster.attempts)).unwrap_or(chrono::Duration::seconds(1));
    let resync = shared.config.resync_interval;
    shared.store.finish_pass(cluster, outcomes, read, full, version, error, retry_at, resync).await
}
