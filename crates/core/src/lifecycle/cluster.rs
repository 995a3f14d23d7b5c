//! The lifecycle of a registered cluster: its status, its generations and its retries.
//!
//! A cluster's `generation` counts the writes to its desired state (its users, databases,
//! access levels, registration); `reconciled_generation` is the newest generation a pass has
//! carried out without error. A cluster is due for a pass when the two differ or its last full
//! pass is older than the resync interval, and never before `next_attempt_at`.
//!
//! | state    | event                                   | next state | effect                                                                                      |
//! |----------|-----------------------------------------|------------|---------------------------------------------------------------------------------------------|
//! | (none)   | registered                              | creating   | generation 1, reconciled 0, attempts 0, due now; reconcilers woken                          |
//! | any      | desired state written                   | same       | generation + 1, attempts 0, due now (a backoff is over: the user changed something); woken  |
//! | any      | admin connection replaced               | same       | as a write, and the last full pass forgotten (the next pass is full)                        |
//! | creating | pass ends without error, primary user and default database ready | online | as the row below                                         |
//! | any      | pass ends without error                 | same       | reconciled = max(reconciled, generation read), attempts 0, due now, error cleared, resynced if full and the admin password unchanged |
//! | any      | pass ends with an error                 | same       | attempts + 1, due at now + [`backoff`]`(attempts)`, error recorded                          |
//! | online   | anything                                | online     | a cluster never goes back to creating                                                       |
//!
//! [`PassEnd`] computes what ending a pass does; the store executes it in one statement (see
//! `Store::finish_pass`), which must judge against the row as it is then: the status moves to
//! online only if the primary user and the default database are ready at that moment, and the
//! reconciled generation only ever rises. The store binds the states as [`ClusterStatus`],
//! [`UserRole`](super::UserRole) and [`SyncStatus`](super::SyncStatus) values.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// The status the API shows for a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ClusterStatus {
    /// Registered; its primary user and default database are not both in place yet.
    Creating,
    /// A pass has put its primary user and default database in place.
    Online,
}

impl ClusterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Creating => "creating",
            ClusterStatus::Online => "online",
        }
    }
}

/// What ending a pass does to its cluster's row (see the table above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassEnd {
    /// The pass succeeded: the reconciled generation rises to the one the pass read, the
    /// attempts start again from 0, and the status may become online.
    pub succeeded: bool,
    /// A full pass that succeeded: the resync is done (if the registration did not change
    /// meanwhile).
    pub resynced: bool,
    /// When the cluster is due again: None for at once (by the metadata database's clock).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl PassEnd {
    /// The end of a pass that was `full` or not, ended with `error` (None: success); a failed
    /// pass is retried at `retry_at`.
    pub fn new(full: bool, error: Option<&str>, retry_at: DateTime<Utc>) -> PassEnd {
        let succeeded = error.is_none();
        PassEnd { succeeded, resynced: full && succeeded, next_attempt_at: (!succeeded).then_some(retry_at) }
    }
}

/// Retry delay after `attempts` failed passes: 1 s doubling to 5 minutes, with ±20% jitter so
/// that many clusters failing together do not retry in lockstep.
pub fn backoff(attempts: i32) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1 << attempts.clamp(0, 9) as u32);
    let capped = base.min(Duration::from_secs(300));
    capped.mul_f64(rand::rng().random_range(0.8..1.2))
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

    #[test]
    fn a_pass_that_succeeds_is_due_at_once_and_a_failed_one_later() {
        let retry_at = Utc::now() + chrono::Duration::seconds(4);
        assert_eq!(
            PassEnd::new(true, None, retry_at),
            PassEnd { succeeded: true, resynced: true, next_attempt_at: None }
        );
        assert!(!PassEnd::new(false, None, retry_at).resynced, "only a full pass resyncs");
        assert_eq!(
            PassEnd::new(true, Some("down"), retry_at),
            PassEnd { succeeded: false, resynced: false, next_attempt_at: Some(retry_at) }
        );
    }

    #[test]
    fn statuses_are_written_as_the_schema_spells_them() {
        assert_eq!(ClusterStatus::Creating.as_str(), "creating");
        assert_eq!(ClusterStatus::Online.as_str(), "online");
    }
}
