//! The heir rule: who may inherit what a deleted user owns (its objects and default privileges,
//! handed over with REASSIGN OWNED before its role is dropped). The API applies it when a
//! deletion names an heir; a pass applies it again when it drops the user, and hands everything
//! to the primary user instead when the named heir no longer qualifies.

use crate::lifecycle::DesiredState;
use crate::model::User;

/// What is known of the user named as heir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The user is wanted: neither deleted nor being deleted.
    pub present: bool,
    /// Its role is on the target (pgplane created or adopted it there).
    pub on_target: bool,
}

impl Candidate {
    /// What a user's record says of it.
    pub fn of(user: &User) -> Self {
        Self { present: user.state == DesiredState::Present, on_target: user.claimed }
    }
}

/// Why a user may not inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeir {
    /// It is the user being deleted.
    Itself,
    /// No such user in the cluster, or it is being deleted (or dropped) too.
    Gone,
    /// The user is wanted but its role is not on the target yet.
    NotCreated,
}

/// Whether `heir` (None: no such user in the cluster) may inherit what `deleted` owns: another
/// user of the same cluster, wanted, whose role is on the target.
pub fn may_inherit(deleted: &str, heir: &str, candidate: Option<Candidate>) -> Result<(), NotHeir> {
    match candidate {
        _ if heir == deleted => Err(NotHeir::Itself),
        Some(Candidate { present: true, on_target: true }) => Ok(()),
        Some(Candidate { present: true, on_target: false }) => Err(NotHeir::NotCreated),
        Some(Candidate { present: false, .. }) | None => Err(NotHeir::Gone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_wanted_user_on_the_target_inherits() {
        let c = |present, on_target| Some(Candidate { present, on_target });
        assert_eq!(may_inherit("a", "b", c(true, true)), Ok(()));
        assert_eq!(may_inherit("a", "a", c(true, true)), Err(NotHeir::Itself));
        assert_eq!(may_inherit("a", "b", c(true, false)), Err(NotHeir::NotCreated));
        assert_eq!(may_inherit("a", "b", c(false, true)), Err(NotHeir::Gone));
        assert_eq!(may_inherit("a", "b", None), Err(NotHeir::Gone));
    }
}
