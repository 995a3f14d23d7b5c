//! The lifecycle of a user's access levels (the levels it holds on the cluster's databases).
//! A user row carries an `access_generation` (bumped by every change to its levels), the
//! `access_applied_generation` a pass last carried out, and the `access_error` of the last
//! attempt.
//!
//! | state                    | event                            | next state | effect                                                                  |
//! |--------------------------|----------------------------------|------------|-------------------------------------------------------------------------|
//! | any                      | levels replaced, something changed | pending  | access generation + 1; the cluster's generation bumped, reconcilers woken |
//! | any                      | levels replaced, nothing changed | same       | nothing                                                                 |
//! | pending (applied < gen)  | a pass carries out generation g  | ready if g is still the newest | applied = max(applied, g), error cleared            |
//! | pending or failed        | a pass fails on it               | failed     | error recorded, applied generation kept                                 |
//! | pending                  | a pass ends before reaching it   | failed     | error recorded on every user with applied < generation                   |
//!
//! "ready" is applied >= generation with no error; a user waits (API `?wait`) on the same
//! rules as any other write (see [`Lifecycle`]). [`AccessOutcome::effect`] computes what
//! recording an outcome does; the store executes it in one statement over all the pass's users
//! (the applied generation only ever rises, judged against the row as it is then).

use chrono::{DateTime, Utc};

use super::{DesiredState, Lifecycle, SyncStatus};
use crate::model::AccessProgress;

/// What a pass came to for one user's levels, read at an access generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOutcome<'a> {
    /// Every level was carried out.
    Applied,
    /// Carrying them out failed; the message holds no secret.
    Failed(&'a str),
}

/// What recording an [`AccessOutcome`] does to the user's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessOutcomeEffect<'a> {
    /// The applied access generation rises to the one the pass read.
    pub advance: bool,
    /// The recorded error (None clears it).
    pub error: Option<&'a str>,
}

impl<'a> AccessOutcome<'a> {
    /// The outcome a pass reports as an optional error message.
    pub fn from_error(message: Option<&'a str>) -> AccessOutcome<'a> {
        match message {
            None => AccessOutcome::Applied,
            Some(m) => AccessOutcome::Failed(m),
        }
    }

    /// What recording this outcome does.
    pub fn effect(self) -> AccessOutcomeEffect<'a> {
        match self {
            AccessOutcome::Applied => AccessOutcomeEffect { advance: true, error: None },
            AccessOutcome::Failed(m) => AccessOutcomeEffect { advance: false, error: Some(m) },
        }
    }
}

/// A user's levels are waited for like any other write: applied at their generation, or an
/// error recorded after the write.
impl Lifecycle for AccessProgress {
    fn desired(&self) -> DesiredState {
        DesiredState::Present
    }
    fn sync(&self) -> SyncStatus {
        if self.access_applied_generation >= self.access_generation && self.access_error.is_none() {
            SyncStatus::Ready
        } else {
            SyncStatus::Pending
        }
    }
    fn generation(&self) -> i64 {
        self.access_generation
    }
    fn applied_generation(&self) -> i64 {
        self.access_applied_generation
    }
    fn last_error(&self) -> Option<&str> {
        self.access_error.as_deref()
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(generation: i64, applied: i64, error: Option<&str>) -> AccessProgress {
        AccessProgress {
            name: "u".into(),
            access_generation: generation,
            access_applied_generation: applied,
            access_error: error.map(Into::into),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn an_applied_outcome_advances_and_clears_a_failure_keeps_the_generation() {
        assert_eq!(
            AccessOutcome::from_error(None).effect(),
            AccessOutcomeEffect { advance: true, error: None }
        );
        assert_eq!(
            AccessOutcome::from_error(Some("boom")).effect(),
            AccessOutcomeEffect { advance: false, error: Some("boom") }
        );
    }

    #[test]
    fn levels_are_ready_once_applied_without_error() {
        assert_eq!(progress(2, 2, None).sync(), SyncStatus::Ready);
        assert_eq!(progress(2, 1, None).sync(), SyncStatus::Pending);
        assert_eq!(progress(2, 2, Some("x")).sync(), SyncStatus::Pending);
        assert!(progress(2, 1, None).changed());
    }
}
