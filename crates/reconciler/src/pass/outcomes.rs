//! Recording outcomes: what each step concluded, kept in the pass's ledger and written to the
//! metadata store before the pass touches the target again (the last ones with the pass's
//! end), skipping objects whose record would not change.

use pgplane_core::lifecycle::{Lifecycle, ObjectKind, Outcome};
use pgplane_core::model::{Cluster, Database, User};
use pgplane_core::store::ObjectOutcome;
use uuid::Uuid;

use super::steps::StepError;
use crate::controller::Shared;
use crate::plan::Step;

/// What a pass has concluded so far: the outcomes not yet recorded, its first failure, and how
/// many steps touched the target.
#[derive(Default)]
pub(super) struct Ledger<'a> {
    outcomes: Vec<ObjectOutcome<'a>>,
    pub first_error: Option<String>,
    pub changes: usize,
}

impl<'a> Ledger<'a> {
    /// An empty ledger that starts with a failure found before the pass (or none).
    pub(super) fn starting_with(first_error: Option<String>) -> Self {
        Ledger { first_error, ..Ledger::default() }
    }

    /// Records the outcomes concluded so far, in one statement per kind of object. Called
    /// before each phase of a pass that touches the target (and after each database step), so
    /// that a pass abandoned later (its deadline, a crash) keeps what it did, above all the
    /// conflicts that give a claimed name back to its owner.
    pub(super) async fn flush(
        &mut self,
        shared: &Shared,
        cluster_id: Uuid,
    ) -> Result<(), pgplane_core::Error> {
        if self.outcomes.is_empty() {
            return Ok(());
        }
        shared.store.record_outcomes(cluster_id, &self.outcomes).await?;
        self.outcomes.clear();
        Ok(())
    }

    /// The outcomes left for the pass's end to record with it (`Store::finish_pass`): users
    /// but the primary user, whose outcome the cluster's status is judged on. Should others be
    /// left, everything is recorded now instead.
    pub(super) async fn take_for_end(
        &mut self,
        shared: &Shared,
        cluster: &Cluster,
    ) -> Result<Vec<ObjectOutcome<'a>>, pgplane_core::Error> {
        let with_end = |o: &ObjectOutcome<'_>| o.kind == ObjectKind::User && o.name != cluster.primary_user;
        if !self.outcomes.iter().all(with_end) {
            self.flush(shared, cluster.cluster_id).await?;
        }
        Ok(std::mem::take(&mut self.outcomes))
    }
}

/// The outcome of a step, given what applying it returned.
pub(super) fn outcome_of(step: &Step, result: Result<(), StepError>) -> Outcome {
    match (step, result) {
        (Step::Conflict(m), _) => Outcome::Conflict(m.clone()),
        (_, Err(StepError::Conflict(m))) => Outcome::Conflict(m),
        (_, Err(StepError::Target(e))) => Outcome::Failed(e.to_string()),
        (Step::DropRole { .. } | Step::DropDatabase | Step::Forget, Ok(())) => Outcome::Dropped,
        _ => Outcome::Applied,
    }
}

/// What an object's outcome is recorded against.
pub(super) struct Record<'a> {
    pub kind: ObjectKind,
    pub name: &'a str,
    pub object: &'a dyn Lifecycle,
}

impl<'a> Record<'a> {
    pub(super) fn of_user(user: &'a User) -> Self {
        Record { kind: ObjectKind::User, name: &user.name, object: user }
    }

    pub(super) fn of_database(db: &'a Database) -> Self {
        Record { kind: ObjectKind::Database, name: &db.name, object: db }
    }
}

/// Ends one object's step: counts and logs it when it touched the target, remembers the
/// pass's first failure, and keeps the outcome to record (for an object that may conclude twice
/// in a pass, `twice`: a user with an alternate login, the worse of the two) unless it changes
/// nothing (an object already ready and in sync, with no error to clear), so that a pass over a
/// converged cluster writes nothing but its end.
pub(super) fn conclude<'a>(
    cluster: &Cluster,
    ledger: &mut Ledger<'a>,
    record: Record<'a>,
    step: &Step,
    outcome: Outcome,
    twice: bool,
) {
    let Record { kind, name, object } = record;
    if step.changes_target() {
        ledger.changes += 1;
        let ok = matches!(outcome, Outcome::Applied | Outcome::Dropped);
        crate::metrics::ddl(step.name(), ok);
        tracing::info!(cluster.id = %cluster.cluster_id, kind = kind.noun(), name, step = step.name(), ok, "step");
    }
    let unchanged = object.unchanged_by(&outcome);
    if let Outcome::Failed(message) = &outcome {
        ledger.first_error.get_or_insert_with(|| format!("{} {name:?}: {message}", kind.noun()));
    }
    let prior =
        if twice { ledger.outcomes.iter_mut().find(|o| o.kind == kind && o.name == name) } else { None };
    if let Some(prior) = prior {
        if outcome.rank() > prior.outcome.rank() {
            prior.outcome = outcome;
        }
    } else if !unchanged {
        ledger.outcomes.push(ObjectOutcome { kind, name, generation: object.generation(), outcome });
    }
}
