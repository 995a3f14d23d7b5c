//! What a reconcile pass would do on a target right now, as the API shows it before it happens
//! (`GET …/plan`): one entry per object that needs a step, with the statements the pass would
//! send (verifiers and passwords redacted) and the drift it would repair. The reconciler makes
//! plans (it owns observing and planning); the gateway only shows them, through [`Planner`],
//! which the process that runs both hands to the gateway.

use std::future::Future;
use std::pin::Pin;

use pgplane_core::model::Cluster;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::TargetError;

/// What stands in a plan's SQL for a password verifier.
pub const REDACTED: &str = "<redacted>";

/// The phases of a pass, in the order it runs them (the order of the variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Roles to create or fix, the primary user first.
    Roles,
    /// The primary user's memberships pgplane did not give it, revoked.
    PrimaryUser,
    /// Databases to create or fix (on a shared server a new one is closed to PUBLIC at once),
    /// then those to drop.
    Databases,
    /// On a shared server: the cluster's databases closed to PUBLIC and opened to its users.
    DatabaseRights,
    /// The access levels' group roles: created, fixed.
    AccessGroups,
    /// Each level's privileges in its database, and those of groups to drop.
    AccessPrivileges,
    /// Users' memberships of the groups.
    AccessMembers,
    /// Groups no level needs any more.
    AccessCleanup,
    /// Roles to drop, what they own handed to their heirs.
    DropRoles,
}

impl Phase {
    /// Its name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Roles => "roles",
            Phase::PrimaryUser => "primary_user",
            Phase::Databases => "databases",
            Phase::DatabaseRights => "database_rights",
            Phase::AccessGroups => "access_groups",
            Phase::AccessPrivileges => "access_privileges",
            Phase::AccessMembers => "access_members",
            Phase::AccessCleanup => "access_cleanup",
            Phase::DropRoles => "drop_roles",
        }
    }
}

/// One statement a step would send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PlannedStatement {
    /// The database it runs in (absent: the admin connection's database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The SQL, identifiers quoted as sent; password verifiers read `'<redacted>'`.
    pub sql: String,
}

/// The step a pass would take for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PlannedStep {
    /// The phase of the pass it belongs to; a plan lists its steps phase by phase.
    pub phase: Phase,
    /// `user`, `database` or `access_group` (a level on a database, named `database/level`).
    pub kind: &'static str,
    pub name: String,
    /// Users and databases: `create_role`, `alter_role`, `drop_role`, `create_database`,
    /// `alter_database_owner`, `drop_database`, `forget` (the row goes, nothing is on the
    /// target), `conflict` (a same-named object pgplane does not manage: left untouched) or
    /// `left_out` (its stored credentials cannot be opened). The primary user:
    /// `revoke_foreign_memberships` (the other roles are not named: they may be another
    /// team's). A database on a shared server: `close_to_public` or `grant_connect` (to the
    /// cluster's users that lack CONNECT and TEMPORARY). Access levels: `create_group`,
    /// `fix_group`, `grant_privileges`, `drop_owned`, `grant_membership`,
    /// `revoke_membership`, `drop_group`, `forget` (the group's record goes), `conflict` (a
    /// role pgplane did not create stands under the group's name) or `waiting` (the level
    /// cannot be carried out yet: the note says why).
    pub step: &'static str,
    /// Whether the step changes the target.
    pub changes_target: bool,
    /// What changed behind pgplane's back that this step repairs (absent: no drift; the step
    /// carries out a change asked for through the API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// Why there is nothing to send (conflicts, users left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The statements, in the order the pass sends them.
    pub statements: Vec<PlannedStatement>,
}

/// What a full pass over a cluster would do on its target, observed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Plan {
    /// The target's PostgreSQL version (`server_version`).
    pub server_version: String,
    /// Steps in the order a pass takes them, phase by phase (see [`PlannedStep::phase`]).
    pub steps: Vec<PlannedStep>,
    /// Objects already as desired (no step).
    pub in_sync: usize,
}

/// A boxed future, as [`Planner`] returns it.
pub type PlanFuture<'a> = Pin<Box<dyn Future<Output = Result<Plan, TargetError>> + Send + 'a>>;

/// Makes plans: implemented by the reconciler, handed to the gateway by the process that runs
/// them (so that the gateway needs no reconciler to be built).
pub trait Planner: Send + Sync + std::fmt::Debug {
    /// Observes `cluster`'s target, read-only, and plans a full pass over it.
    fn plan<'a>(&'a self, cluster: &'a Cluster) -> PlanFuture<'a>;
}
