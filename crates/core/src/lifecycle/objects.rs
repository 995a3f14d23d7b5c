//! The lifecycle of a managed object (a user or a database): its desired state, how far that is
//! applied on the target, whether pgplane owns the name there, and the rules that follow from
//! them: what status the API shows, when a write has settled, which objects a failed pass
//! marks, when a pass may report drift, and what recording a step's outcome does to the object.
//! The store persists these values (text columns, mapped with `sqlx::Type` and bound as these
//! enums: a value this code does not know is a decode error, never a guess).
//!
//! | state (desired, sync)  | event                                  | next state                         | effect                                                  |
//! |------------------------|----------------------------------------|------------------------------------|---------------------------------------------------------|
//! | (none)                 | created through the API                | present, pending                   | generation 1, applied 0, not claimed                    |
//! | (none)                 | cluster registered (primary, default)  | present, pending                   | claimed (adopted if it exists on the target)            |
//! | present, s             | settings or password changed           | present, [`SyncStatus::after_write`]`(s)` | generation + 1                                   |
//! | any, s                 | deletion requested                     | absent, `after_write(s)`           | generation + 1, heir recorded (users)                   |
//! | any                    | a pass is about to create it           | same                               | claimed                                                 |
//! | any, at generation g   | [`Outcome::Applied`] at g              | ready (pending if it moved past g) | applied = max(applied, g), error cleared                |
//! | any                    | [`Outcome::Conflict`] at g             | conflict                           | applied = max(applied, g), error = why, unclaimed       |
//! | any                    | [`Outcome::Failed`] at g               | same                               | error = why, unless a later generation was applied      |
//! | absent, at g           | [`Outcome::Dropped`] at g              | (row deleted)                      | only if still absent at g                               |
//! | present, unclaimed, g  | its create is withdrawn (conflict)     | (row deleted)                      | only if still at g and unclaimed                        |
//!
//! [`Outcome::effect`] and [`SyncStatus::after_write`] compute the effects. The store executes
//! them in single statements that compare with the row as it is when they run (the desired
//! state may change between a pass's read and its record): a write's new sync status is chosen
//! in its UPDATE from the row's current one (conflict kept, see [`SyncStatus::KEPT_BY_WRITE`]),
//! and an outcome's sync status from whether the row is still at the generation the pass read.

use chrono::{DateTime, Utc};

/// The two kinds of managed object (and of the names they hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    User,
    Database,
}

impl ObjectKind {
    /// The noun used in messages ("user", "database").
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::User => "user",
            ObjectKind::Database => "database",
        }
    }
}

/// Desired state of an object: whether it should exist on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DesiredState {
    Present,
    Absent,
}

/// How far an object's desired state has been applied to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum SyncStatus {
    /// Not applied yet (new, changed, or the last attempt failed: see `last_error`).
    Pending,
    /// The target matches the desired state.
    Ready,
    /// A same-named object pgplane does not manage exists on the target; pgplane leaves it alone.
    Conflict,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Pending => "pending",
            SyncStatus::Ready => "ready",
            SyncStatus::Conflict => "conflict",
        }
    }

    /// The status a write to the desired state leaves as it is (the one other statuses become
    /// is `after_write` of any other): a statement that writes the desired state decides from
    /// the row as it is when it runs, so it binds these two values.
    pub const KEPT_BY_WRITE: SyncStatus = SyncStatus::Conflict;

    /// The status after a write to the desired state: pending again, unless the name is
    /// someone else's on the target (a write does not make it pgplane's).
    pub fn after_write(self) -> SyncStatus {
        match self {
            SyncStatus::Conflict => SyncStatus::Conflict,
            SyncStatus::Pending | SyncStatus::Ready => SyncStatus::Pending,
        }
    }
}

/// What a user is to its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum UserRole {
    /// The admin user every cluster has; never deleted.
    Primary,
    Normal,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Primary => "primary",
            UserRole::Normal => "normal",
        }
    }
}

/// The status the API shows for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownStatus {
    Pending,
    Ready,
    Conflict,
    /// Its deletion was asked for and is not done yet.
    Deleting,
}

impl ShownStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Pending => "pending",
            ShownStatus::Ready => "ready",
            ShownStatus::Conflict => "conflict",
            ShownStatus::Deleting => "deleting",
        }
    }
}

/// What applying one object's step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target now matches the object's desired state at the generation that was read.
    Applied,
    /// Applying failed; the pass will be retried with backoff. The message holds no secret.
    Failed(String),
    /// A same-named object that pgplane does not manage exists on the target: left alone.
    Conflict(String),
    /// The object was dropped from the target (or never existed) and its row can go.
    Dropped,
}

/// What recording an outcome reached at generation `g` does to the object's row (see
/// [`Outcome::effect`]). The store applies it in one statement that compares `g` with the
/// row's generation as it is then, since the desired state may have changed meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeEffect {
    /// The row is deleted, if still at `g` and to be absent.
    pub delete: bool,
    /// The applied generation rises to `g` (a failure never moves it).
    pub advance: bool,
    /// The sync status when the row is still at `g`, and when it has moved on; None keeps it.
    pub sync_if_current: Option<SyncStatus>,
    pub sync_if_moved_on: Option<SyncStatus>,
    /// pgplane no longer owns the name on the target.
    pub unclaim: bool,
    /// Only recorded if nothing later was applied already (a failure never overwrites a
    /// later success).
    pub only_if_not_applied_since: bool,
}

impl Outcome {
    /// How bad it is, for an object two steps concluded on (a user and its alternate login):
    /// a conflict, then a failure, outweigh success.
    pub fn rank(&self) -> u8 {
        match self {
            Outcome::Applied | Outcome::Dropped => 0,
            Outcome::Failed(_) => 1,
            Outcome::Conflict(_) => 2,
        }
    }

    /// What recording this outcome does to its object.
    pub fn effect(&self) -> OutcomeEffect {
        let keep = OutcomeEffect {
            delete: false,
            advance: true,
            sync_if_current: None,
            sync_if_moved_on: None,
            unclaim: false,
            only_if_not_applied_since: false,
        };
        match self {
            Outcome::Applied => OutcomeEffect {
                sync_if_current: Some(SyncStatus::Ready),
                sync_if_moved_on: Some(SyncStatus::Pending),
                ..keep
            },
            Outcome::Conflict(_) => OutcomeEffect {
                sync_if_current: Some(SyncStatus::Conflict),
                sync_if_moved_on: Some(SyncStatus::Conflict),
                unclaim: true,
                ..keep
            },
            Outcome::Failed(_) => OutcomeEffect { advance: false, only_if_not_applied_since: true, ..keep },
            Outcome::Dropped => OutcomeEffect { delete: true, advance: false, ..keep },
        }
    }

    /// The message recorded as the object's `last_error` (None clears it).
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Failed(m) | Outcome::Conflict(m) => Some(m),
            Outcome::Applied | Outcome::Dropped => None,
        }
    }
}

/// The lifecycle bookkeeping users and databases share, and the rules over it.
pub trait Lifecycle {
    fn desired(&self) -> DesiredState;
    fn sync(&self) -> SyncStatus;
    fn generation(&self) -> i64;
    fn applied_generation(&self) -> i64;
    fn last_error(&self) -> Option<&str>;
    fn updated_at(&self) -> DateTime<Utc>;

    /// Its desired state changed since it was last applied.
    fn changed(&self) -> bool {
        self.applied_generation() < self.generation()
    }

    /// The status the API shows.
    fn shown_status(&self) -> ShownStatus {
        match (self.desired(), self.sync()) {
            (DesiredState::Absent, _) => ShownStatus::Deleting,
            (DesiredState::Present, SyncStatus::Pending) => ShownStatus::Pending,
            (DesiredState::Present, SyncStatus::Ready) => ShownStatus::Ready,
            (DesiredState::Present, SyncStatus::Conflict) => ShownStatus::Conflict,
        }
    }

    /// Whether a write made at `generation` (the row then updated at `written_at`, by the
    /// metadata database's clock) has settled: applied, found in conflict, or a pass after the
    /// write recorded an error. An object that is gone has settled too (see [`settled`]).
    fn settled_since(&self, generation: i64, written_at: DateTime<Utc>) -> bool {
        self.applied_generation() >= generation
            || self.sync() == SyncStatus::Conflict
            || (self.last_error().is_some() && self.updated_at() > written_at)
    }

    /// Whether a pass that found the target needing a step for it is seeing drift: it was in
    /// sync, and nothing changed on pgplane's side since.
    fn watched_for_drift(&self) -> bool {
        self.sync() == SyncStatus::Ready && !self.changed()
    }

    /// Whether a pass that cannot reach the target records its error on it: it is not in sync.
    fn awaits_apply(&self) -> bool {
        self.sync() == SyncStatus::Pending || self.changed()
    }

    /// Whether recording `outcome` (reached at the object's generation) would leave its row as
    /// it is, so that a pass over a converged cluster writes nothing but its end.
    fn unchanged_by(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Applied => {
                self.sync() == SyncStatus::Ready && !self.changed() && self.last_error().is_none()
            }
            Outcome::Conflict(_) => self.sync() == SyncStatus::Conflict && !self.changed(),
            Outcome::Failed(_) | Outcome::Dropped => false,
        }
    }
}

/// Whether a write at `generation` has settled, the object being `object` now (None: gone).
pub fn settled<T: Lifecycle>(object: Option<&T>, generation: i64, written_at: DateTime<Utc>) -> bool {
    object.is_none_or(|o| o.settled_since(generation, written_at))
}

/// Implements [`Lifecycle`] for a row type with the shared lifecycle columns.
macro_rules! lifecycle_columns {
    ($row:ty) => {
        impl $crate::lifecycle::Lifecycle for $row {
            fn desired(&self) -> $crate::lifecycle::DesiredState {
                self.state
            }
            fn sync(&self) -> $crate::lifecycle::SyncStatus {
                self.sync_status
            }
            fn generation(&self) -> i64 {
                self.generation
            }
            fn applied_generation(&self) -> i64 {
                self.applied_generation
            }
            fn last_error(&self) -> Option<&str> {
                self.last_error.as_deref()
            }
            fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
                self.updated_at
            }
        }
    };
}

pub(crate) use lifecycle_columns;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Object {
        state: DesiredState,
        sync_status: SyncStatus,
        generation: i64,
        applied_generation: i64,
        last_error: Option<String>,
        updated_at: DateTime<Utc>,
    }

    lifecycle_columns!(Object);

    fn ready() -> Object {
        Object {
            state: DesiredState::Present,
            sync_status: SyncStatus::Ready,
            generation: 3,
            applied_generation: 3,
            last_error: None,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_api_shows_deleting_whatever_the_sync_status() {
        assert_eq!(ready().shown_status(), ShownStatus::Ready);
        for sync in [SyncStatus::Pending, SyncStatus::Ready, SyncStatus::Conflict] {
            let o = Object { state: DesiredState::Absent, sync_status: sync, ..ready() };
            assert_eq!(o.shown_status(), ShownStatus::Deleting);
        }
        let o = Object { sync_status: SyncStatus::Conflict, ..ready() };
        assert_eq!(o.shown_status().as_str(), "conflict");
    }

    #[test]
    fn a_write_settles_when_applied_in_conflict_failed_after_it_or_gone() {
        let written_at = Utc::now() - chrono::Duration::seconds(1);
        let waiting =
            Object { sync_status: SyncStatus::Pending, generation: 4, applied_generation: 3, ..ready() };
        assert!(!waiting.settled_since(4, written_at));
        assert!(Object { applied_generation: 4, ..waiting.clone() }.settled_since(4, written_at));
        assert!(Object { sync_status: SyncStatus::Conflict, ..waiting.clone() }.settled_since(4, written_at));
        assert!(Object { last_error: Some("down".into()), ..waiting.clone() }.settled_since(4, written_at));
        let old_error = Object { last_error: Some("down".into()), updated_at: written_at, ..waiting.clone() };
        assert!(!old_error.settled_since(4, written_at), "an error from before the write is not its answer");
        assert!(settled::<Object>(None, 4, written_at));
    }

    #[test]
    fn drift_is_reported_only_for_objects_in_sync() {
        assert!(ready().watched_for_drift());
        assert!(!Object { generation: 4, ..ready() }.watched_for_drift());
        assert!(!Object { sync_status: SyncStatus::Pending, ..ready() }.watched_for_drift());
        assert!(!ready().awaits_apply());
        assert!(Object { generation: 4, ..ready() }.awaits_apply());
    }

    #[test]
    fn recording_an_outcome_that_changes_nothing_is_skipped() {
        assert!(ready().unchanged_by(&Outcome::Applied));
        assert!(
            !Object { last_error: Some("old".into()), ..ready() }.unchanged_by(&Outcome::Applied),
            "the error is cleared"
        );
        assert!(!ready().unchanged_by(&Outcome::Failed("x".into())));
        let conflict = Object { sync_status: SyncStatus::Conflict, ..ready() };
        assert!(conflict.unchanged_by(&Outcome::Conflict("x".into())));
        assert!(!ready().unchanged_by(&Outcome::Dropped));
    }

    #[test]
    fn outcomes_move_the_row_as_the_store_records_them() {
        let applied = Outcome::Applied.effect();
        assert_eq!(
            (applied.sync_if_current, applied.sync_if_moved_on),
            (Some(SyncStatus::Ready), Some(SyncStatus::Pending))
        );
        assert!(applied.advance && !applied.unclaim && !applied.delete);
        let failed = Outcome::Failed("x".into()).effect();
        assert!(!failed.advance && failed.only_if_not_applied_since && failed.sync_if_current.is_none());
        let conflict = Outcome::Conflict("x".into()).effect();
        assert!(conflict.unclaim && conflict.sync_if_moved_on == Some(SyncStatus::Conflict));
        assert!(Outcome::Dropped.effect().delete);
        assert_eq!(Outcome::Failed("boom".into()).message(), Some("boom"));
        assert_eq!(Outcome::Applied.message(), None);
    }

    #[test]
    fn a_write_makes_an_object_pending_unless_its_name_is_someone_elses() {
        assert_eq!(SyncStatus::Ready.after_write(), SyncStatus::Pending);
        assert_eq!(SyncStatus::Pending.after_write(), SyncStatus::Pending);
        assert_eq!(SyncStatus::Conflict.after_write(), SyncStatus::Conflict);
        assert_eq!(SyncStatus::KEPT_BY_WRITE.after_write(), SyncStatus::KEPT_BY_WRITE);
    }
}
