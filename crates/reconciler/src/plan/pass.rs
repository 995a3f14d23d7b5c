//! A pass as a value: [`plan_pass`] turns what pgplane wants (roles, databases, access levels)
//! and what was observed on the target ([`Seen`]) into one ordered [`PassPlan`]: phases of
//! operations, each naming its object, its kind of step, the statements it sends and on which
//! database, and the drift it repairs. Pure (no I/O, no async): the rules are `plan_role`,
//! `plan_database`, `access::plan` and `access::database_statements`, the text the `sql`
//! builders', with every password verifier redacted. Each operation also carries what the pass
//! runs for it ([`Action`]: a user's or database's [`Step`], whose statements the pass builds
//! with the real verifier, or the access group it concerns). The pass executes this value
//! (`pass`: the role and database phases from [`plan_pass`], the access phases from
//! [`plan_access_phases`] once roles and databases are in place); `GET …/plan` renders it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pgplane_core::lifecycle::{DesiredState, ObjectKind};
use pgplane_target_server::plan::{Phase, Plan, PlannedStatement, PlannedStep, REDACTED};
use pgplane_target_server::primary::{revoke_sql, ForeignGrant, GrantCounts};

use super::access::{self, AccessPlan, DatabaseFacts, Group, GroupFacts, Inputs};
use super::drift::{database_drift, role_drift};
use super::{heir_of, inheriting, plan_database, plan_role, DesiredDatabase, DesiredRole, Step};
use crate::observe::rights::DatabaseRights;
use crate::observe::Observed;
use crate::sql;

/// A role pgplane wants, and whether drift on it is reported (it was in sync before).
pub(crate) struct WantedRole<'a> {
    pub desired: &'a DesiredRole,
    pub watched: bool,
}

/// A database pgplane wants, and whether drift on it is reported.
pub(crate) struct WantedDatabase {
    pub desired: DesiredDatabase,
    pub watched: bool,
}

/// What pgplane wants on the target.
pub(crate) struct Wanted<'a> {
    pub primary_user: &'a str,
    pub roles: Vec<WantedRole<'a>>,
    /// Users whose stored credentials cannot be opened: (name, why). They are left out.
    pub left_out: Vec<(String, String)>,
    pub databases: Vec<WantedDatabase>,
    /// The access levels, when the cluster has any (or had: groups to drop).
    pub access: Option<&'a Inputs<'a>>,
}

/// What was observed on the target, all of it before planning.
#[derive(Debug, Default)]
pub(crate) struct Seen<'a> {
    pub observed: Option<&'a Observed>,
    /// The admin session's database.
    pub admin_database: String,
    /// For each role that is dropped: the databases where it owns something or holds a
    /// privilege (`pg_shdepend`).
    pub owned_in: HashMap<String, Vec<String>>,
    /// The access groups' facts on the admin session, by role name.
    pub groups: HashMap<String, GroupFacts>,
    /// Per database: what pgplane's existing groups lack there.
    pub in_databases: BTreeMap<String, DatabaseFacts>,
    /// Per database: its schemas (PostgreSQL's own aside), and whether each holds tables and
    /// sequences: what a group created in this pass lacks there.
    pub schemas: BTreeMap<String, Vec<(String, bool, bool)>>,
    /// The primary user's memberships pgplane did not give it (read when the pass has the
    /// primary user and it is on the target).
    pub primary_grants: Vec<ForeignGrant>,
    /// On a server other clusters share: the cluster's users that hold CONNECT and TEMPORARY
    /// on its databases, and those databases' rights as found (None: not shared).
    pub rights: Option<(Vec<String>, Vec<DatabaseRights>)>,
}

/// Objects with their steps, in the order a phase takes them.
pub(crate) type Planned<T> = Vec<(T, Step)>;

/// Splits the roles' steps into the pass's two role phases, in order: roles to create or fix
/// (the primary user first: databases are owned by it, the others' ADMIN OPTION goes to it),
/// and roles to drop (last: what they own is handed over once everything else is in place).
pub(crate) fn role_phases<T>(
    planned: Vec<(T, Step)>,
    desired: impl Fn(&T) -> &DesiredRole,
) -> (Planned<T>, Planned<T>) {
    let (mut present, absent): (Vec<_>, Vec<_>) =
        planned.into_iter().partition(|(r, _)| desired(r).state == DesiredState::Present);
    present.sort_by_key(|(r, _)| !desired(r).primary);
    (present, absent)
}

/// Orders the databases' steps as the pass takes them: those to create or fix before those to
/// drop.
pub(crate) fn database_order<T>(
    planned: Vec<(T, Step)>,
    state: impl Fn(&T) -> DesiredState,
) -> Vec<(T, Step)> {
    let (present, absent): (Vec<_>, Vec<_>) =
        planned.into_iter().partition(|(d, _)| state(d) == DesiredState::Present);
    present.into_iter().chain(absent).collect()
}

/// What the pass runs for one operation of the access phases: the group (or role) it concerns,
/// so that the executor (`pass::access`) can keep what must happen around the statements
/// (recording a new group's oid before its CREATE commits, skipping groups that could not be
/// created, keeping groups whose database could not be visited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Shown only (users left out, conflicting or waiting groups, group records forgotten).
    Shown,
    /// The step of `Wanted::roles[index]`: the pass builds its statements with the real
    /// verifier (`pass::steps`).
    Role { index: usize, step: Step },
    /// The step of `Wanted::databases[index]`; `closing`: on a shared server, what closes a
    /// new database to PUBLIC once created, before its creation is recorded.
    Database { index: usize, step: Step, closing: Option<String> },
    /// The primary user's foreign memberships, revoked one by one.
    RevokeForeign(Vec<ForeignGrant>),
    /// A database's rights on a shared server brought in line (one message).
    Rights { database: String, sql: String },
    /// CREATE ROLE for a group, on the admin session.
    CreateGroup(Group),
    /// Each statement on its own, on the admin session.
    FixGroup,
    /// The group's privileges in its database; `found`: the drift they repair.
    Privileges { group: Group, found: Vec<String> },
    /// DROP OWNED for a group about to be dropped, in its database.
    DropOwned(Group),
    /// GRANT or REVOKE of the group role `role`, on the admin session.
    Membership { role: String },
    /// DROP ROLE for a group, once its databases were visited.
    DropGroup(Group),
}

/// One operation: what is shown (its statements with verifiers redacted) and what the pass
/// runs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operation {
    pub step: PlannedStep,
    pub action: Action,
}

/// One phase of a pass and its operations, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedPhase {
    pub phase: Phase,
    pub operations: Vec<Operation>,
}

/// The operations of `phase` among `phases`, in order.
pub(crate) fn operations_in(phases: &[PlannedPhase], phase: Phase) -> impl Iterator<Item = &Operation> {
    phases.iter().filter(move |p| p.phase == phase).flat_map(|p| p.operations.iter())
}

/// What one pass does, phase by phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PassPlan {
    pub server_version: String,
    pub phases: Vec<PlannedPhase>,
    /// Users and databases already as desired.
    pub in_sync: usize,
}

impl PassPlan {
    /// The operations of `phase`, in order.
    pub fn operations(&self, phase: Phase) -> impl Iterator<Item = &Operation> {
        operations_in(&self.phases, phase)
    }

    /// The steps of `phase`'s users (`Action::Role`) or databases (`Action::Database`), by
    /// their index in [`Wanted`], in the phase's order.
    pub fn steps(&self, phase: Phase) -> Vec<(usize, &Step)> {
        self.operations(phase)
            .filter_map(|o| match &o.action {
                Action::Role { index, step } | Action::Database { index, step, .. } => Some((*index, step)),
                _ => None,
            })
            .collect()
    }

    /// What closes each new database (named by `name_of` its index in [`Wanted`]) to PUBLIC
    /// once created, on a shared server.
    pub fn closings<'w>(&self, name_of: impl Fn(usize) -> &'w str) -> HashMap<&'w str, String> {
        self.operations(Phase::Databases)
            .filter_map(|o| match &o.action {
                Action::Database { index, closing: Some(sql), .. } => Some((name_of(*index), sql.clone())),
                _ => None,
            })
            .collect()
    }

    /// The plan as the API shows it: its operations in order, each naming its phase.
    pub fn render(self) -> Plan {
        Plan {
            server_version: self.server_version,
            steps: self.phases.into_iter().flat_map(|p| p.operations).map(|o| o.step).collect(),
            in_sync: self.in_sync,
        }
    }
}

/// The plan being built: the current phase's operations go into it.
struct Builder {
    phases: Vec<PlannedPhase>,
    in_sync: usize,
}

impl Builder {
    fn push(&mut self, phase: Phase, op: PlannedStep) {
        self.push_action(phase, op, Action::Shown);
    }

    fn push_action(&mut self, phase: Phase, op: PlannedStep, action: Action) {
        let operation = Operation { step: PlannedStep { phase, ..op }, action };
        match self.phases.iter_mut().find(|p| p.phase == phase) {
            Some(p) => p.operations.push(operation),
            None => self.phases.push(PlannedPhase { phase, operations: vec![operation] }),
        }
    }
}

/// An operation on one object (its phase is set when it is pushed).
fn op(kind: &'static str, name: &str, step: &'static str, changes_target: bool) -> PlannedStep {
    PlannedStep {
        phase: Phase::Roles, // set when pushed
        kind,
        name: name.to_string(),
        step,
        changes_target,
        drift: None,
        note: None,
        statements: Vec::new(),
    }
}

/// A statement in `database`, None standing for the admin session's database.
fn statement(database: Option<&str>, admin_database: &str, sql: String) -> PlannedStatement {
    PlannedStatement { database: database.filter(|d| *d != admin_database).map(str::to_string), sql }
}

/// The operation for a user's or database's step (None when it is in sync).
fn object_op(kind: ObjectKind, name: &str, step: &Step, drift: Option<String>) -> Option<PlannedStep> {
    if *step == Step::InSync {
        return None;
    }
    let note = match step {
        Step::Conflict(why) => Some(why.clone()),
        Step::Forget => Some(format!("the {} is not on the target: its record is removed", kind.noun())),
        _ => None,
    };
    Some(PlannedStep { drift, note, ..op(kind.noun(), name, step.name(), step.changes_target()) })
}

/// Plans one pass: what it would do on the target observed in `seen`.
pub(crate) fn plan_pass(wanted: &Wanted<'_>, seen: &Seen<'_>) -> PassPlan {
    let Some(observed) = seen.observed else {
        return PassPlan { server_version: String::new(), phases: Vec::new(), in_sync: 0 };
    };
    let primary = wanted.primary_user;
    let admin_db = seen.admin_database.as_str();
    let mut plan = Builder { phases: Vec::new(), in_sync: 0 };

    // Roles to create or fix, the primary user first (databases are owned by it).
    let roles: Vec<((usize, &WantedRole<'_>), Step)> = wanted
        .roles
        .iter()
        .enumerate()
        .map(|(i, r)| ((i, r), plan_role(r.desired, observed, primary)))
        .collect();
    let (present, absent) = role_phases(roles, |(_, r)| r.desired);
    for ((index, role), step) in &present {
        let drift = role.watched.then(|| role_drift(role.desired, step, observed)).flatten();
        match object_op(ObjectKind::User, &role.desired.name, step, drift) {
            Some(mut o) => {
                // Never a verifier: the plan is shown.
                o.statements = sql::roles::role_sql(&role.desired.name, REDACTED, step)
                    .map(|s| statement(None, admin_db, s))
                    .into_iter()
                    .collect();
                if let Some(why) = role.desired.withheld {
                    o.note = Some(why.to_string());
                }
                plan.push_action(Phase::Roles, o, Action::Role { index: *index, step: step.clone() });
            }
            None => plan.in_sync += 1,
        }
    }
    for (name, why) in &wanted.left_out {
        plan.push(
            Phase::Roles,
            PlannedStep { note: Some(why.clone()), ..op("user", name, "left_out", false) },
        );
    }
    if !seen.primary_grants.is_empty() {
        let watched = wanted.roles.iter().any(|r| r.desired.primary && r.watched);
        plan_primary_user(&mut plan, &seen.primary_grants, primary, observed.version_num, watched, admin_db);
    }
    // On a shared server, the users that get CONNECT and TEMPORARY: those already the
    // cluster's, and those this pass creates (they are on the target by the databases phase).
    let created: Vec<&str> = present
        .iter()
        .filter(|((_, r), step)| matches!(step, Step::CreateRole { .. }) && r.desired.acts_as.is_none())
        .map(|((_, r), _)| r.desired.name.as_str())
        .filter(|name| *name != primary)
        .collect();
    let grantees = |found: &[String]| -> Vec<String> {
        let mut all: BTreeSet<String> = found.iter().cloned().collect();
        all.extend(created.iter().map(|n| n.to_string()));
        all.into_iter().collect()
    };

    // Databases to create or fix, then those to drop.
    let databases: Vec<((usize, &WantedDatabase), Step)> = wanted
        .databases
        .iter()
        .enumerate()
        .map(|(i, d)| ((i, d), plan_database(&d.desired, observed, primary)))
        .collect();
    let databases = database_order(databases, |(_, d)| d.desired.state);
    for ((index, db), step) in &databases {
        let name = &db.desired.name;
        let drift = db.watched.then(|| database_drift(name, step, observed)).flatten();
        match object_op(ObjectKind::Database, name, step, drift) {
            Some(mut o) => {
                o.statements = sql::databases::database_sql(name, step)
                    .map(|s| statement(None, admin_db, s))
                    .into_iter()
                    .collect();
                // A new database is owned by the primary user: everyone else gets the rights.
                let closing = match (step, &seen.rights) {
                    (Step::CreateDatabase { .. }, Some((users, _))) => {
                        let users: Vec<String> = users.iter().filter(|u| *u != primary).cloned().collect();
                        Some(sql::rights::rights_sql(name, true, &grantees(&users)))
                    }
                    _ => None,
                };
                o.statements.extend(closing.iter().map(|s| statement(None, admin_db, s.clone())));
                let action = Action::Database { index: *index, step: step.clone(), closing };
                plan.push_action(Phase::Databases, o, action);
            }
            None => plan.in_sync += 1,
        }
    }

    for found in seen.rights.iter().flat_map(|(_, databases)| databases) {
        let missing = grantees(&found.missing);
        if !found.public && missing.is_empty() {
            continue;
        }
        let sql = sql::rights::rights_sql(&found.database, found.public, &missing);
        let step = if found.public { "close_to_public" } else { "grant_connect" };
        let o = PlannedStep {
            drift: (found.public && found.closed_before).then(|| {
                "PUBLIC's CONNECT or TEMPORARY on it was granted back (the server is shared)".into()
            }),
            statements: vec![statement(None, admin_db, sql.clone())],
            ..op("database", &found.database, step, true)
        };
        plan.push_action(Phase::DatabaseRights, o, Action::Rights { database: found.database.clone(), sql });
    }

    if let Some(inputs) = wanted.access {
        plan_access(&mut plan, inputs, seen, primary);
    }

    // Roles to drop, one heir each (an heir that is gone, or goes too, leaves it to the
    // primary user).
    let dropped: Vec<&str> = absent.iter().map(|((_, r), _)| r.desired.name.as_str()).collect();
    let gone: Vec<String> = absent
        .iter()
        .filter_map(|(_, step)| heir_of(step))
        .filter(|h| *h != primary && (dropped.contains(h) || !observed.roles.contains_key(*h)))
        .map(str::to_string)
        .collect();
    for ((index, role), step) in &absent {
        let name = role.desired.name.as_str();
        let Some(mut o) = object_op(ObjectKind::User, name, step, None) else { continue };
        if let Some(heir) = inheriting(step, &gone, primary) {
            if heir_of(step).is_some_and(|h| h != heir) {
                o.drift = Some(format!(
                    "its heir {:?} is gone from the target; what it owned goes to the primary user",
                    heir_of(step).unwrap_or_default()
                ));
            }
            let mut statements = vec![
                statement(None, admin_db, sql::roles::nologin_sql(name)),
                statement(None, admin_db, sql::roles::terminate_stopped_sql(&[name])),
            ];
            for database in seen.owned_in.get(name).into_iter().flatten() {
                statements.push(statement(Some(database), admin_db, sql::roles::hand_over_sql(name, heir)));
            }
            statements.push(statement(None, admin_db, sql::roles::drop_role_sql(name)));
            o.statements = statements;
        }
        plan.push_action(Phase::DropRoles, o, Action::Role { index: *index, step: step.clone() });
    }

    let mut phases = plan.phases;
    phases.sort_by_key(|p| p.phase);
    PassPlan { server_version: observed.version.clone(), phases, in_sync: plan.in_sync }
}

/// The revocation of the primary user's foreign memberships: the other roles unnamed in what
/// is shown, the drift counted (they may be another team's).
fn plan_primary_user(
    plan: &mut Builder,
    grants: &[ForeignGrant],
    primary: &str,
    version_num: i32,
    watched: bool,
    admin_db: &str,
) {
    let counts = GrantCounts::of(grants);
    let o = PlannedStep {
        drift: watched.then(|| format!("{} that pgplane did not grant", counts.describe())),
        statements: grants
            .iter()
            .map(|g| statement(None, admin_db, revoke_sql(&g.unnamed(), primary, version_num)))
            .collect(),
        ..op("user", primary, "revoke_foreign_memberships", true)
    };
    plan.push_action(Phase::PrimaryUser, o, Action::RevokeForeign(grants.to_vec()));
}

/// An access group's name in a plan: its database and level.
fn group_name(group: &Group) -> String {
    format!("{}/{}", group.database, group.level.as_str())
}

/// Takes from `drift` the findings of kind `kind` on `name` that mention every one of `words`,
/// joined; None when there are none.
fn take_drift(
    drift: &mut Vec<(ObjectKind, String, String)>,
    kind: ObjectKind,
    name: &str,
    words: &[&str],
) -> Option<String> {
    let (found, rest): (Vec<_>, Vec<_>) = std::mem::take(drift)
        .into_iter()
        .partition(|(k, n, what)| *k == kind && n == name && words.iter().all(|w| what.contains(w)));
    *drift = rest;
    let found: Vec<String> = found.into_iter().map(|(_, _, what)| what).collect();
    (!found.is_empty()).then(|| found.join("; "))
}

/// The access phases alone, as [`plan_pass`] plans them, and the access plan they come from:
/// what the pass runs once its roles and databases are in place (it observes the access facts
/// then, so that databases it just created are seen).
pub(crate) fn plan_access_phases(
    inputs: &Inputs<'_>,
    seen: &Seen<'_>,
    primary: &str,
) -> (AccessPlan, Vec<PlannedPhase>) {
    let mut plan = Builder { phases: Vec::new(), in_sync: 0 };
    let access = plan_access(&mut plan, inputs, seen, primary);
    (access, plan.phases)
}

/// The access levels' phases: groups created and fixed on the admin session, each level's
/// privileges in its database, memberships, then groups no level needs any more. Returns the
/// access plan they come from (what the pass records in the store).
fn plan_access(plan: &mut Builder, inputs: &Inputs<'_>, seen: &Seen<'_>, primary: &str) -> AccessPlan {
    let admin_db = seen.admin_database.as_str();
    let access = access::plan(inputs, &seen.groups);
    let mut drift = access.drift.clone();
    let group_drift = |drift: &mut Vec<_>, g: &Group| {
        let words = [format!("{} access group", g.level.as_str())];
        take_drift(drift, ObjectKind::Database, &g.database, &[words[0].as_str()])
    };

    for (group, conflict) in &access.conflicts {
        if let Some(why) = conflict {
            let o = op("access_group", &group_name(group), "conflict", false);
            plan.push(Phase::AccessGroups, PlannedStep { note: Some(why.clone()), ..o });
        }
    }
    for (group, why) in &access.blocked {
        if access.conflicts.iter().any(|(g, c)| g == group && c.is_some()) {
            continue;
        }
        let o = op("access_group", &group_name(group), "waiting", false);
        plan.push(Phase::AccessGroups, PlannedStep { note: Some(why.clone()), ..o });
    }
    for group in &access.create {
        let mut o = op("access_group", &group_name(group), "create_group", true);
        o.drift = group_drift(&mut drift, group);
        o.statements = vec![statement(None, admin_db, inputs.create_group_sql(group))];
        plan.push_action(Phase::AccessGroups, o, Action::CreateGroup(group.clone()));
    }
    let fixed: BTreeSet<&Group> = access.fix.iter().map(|(g, _)| g).collect();
    for group in fixed {
        let mut o = op("access_group", &group_name(group), "fix_group", true);
        o.drift = group_drift(&mut drift, group);
        o.statements = access
            .fix
            .iter()
            .filter(|(g, _)| g == group)
            .map(|(_, s)| statement(None, admin_db, s.clone()))
            .collect();
        plan.push_action(Phase::AccessGroups, o, Action::FixGroup);
    }

    for (database, visit) in &access.visits {
        for (group, new) in &visit.ensure {
            let facts = if *new {
                new_group_facts(
                    &group.role,
                    seen.schemas.get(database).map(Vec::as_slice).unwrap_or_default(),
                )
            } else {
                let mut facts = DatabaseFacts::default();
                if let Some(seen) = seen.in_databases.get(database) {
                    facts.schemas = seen.schemas.iter().filter(|s| s.0 == group.role).cloned().collect();
                    facts.defaults = seen.defaults.clone();
                }
                facts
            };
            let (statements, found) = access::database_statements(&[(group.clone(), *new)], &facts, primary);
            if statements.is_empty() {
                continue;
            }
            let mut o = op("access_group", &group_name(group), "grant_privileges", true);
            o.drift = (!found.is_empty()).then(|| found.join("; "));
            o.statements = statements.into_iter().map(|s| statement(Some(database), admin_db, s)).collect();
            plan.push_action(Phase::AccessPrivileges, o, Action::Privileges { group: group.clone(), found });
        }
        for group in &visit.drop {
            let mut o = op("access_group", &group_name(group), "drop_owned", true);
            let sql = sql::access::drop_owned_sql(&[group.role.as_str()]);
            o.statements = vec![statement(Some(database), admin_db, sql)];
            plan.push_action(Phase::AccessPrivileges, o, Action::DropOwned(group.clone()));
        }
    }

    for (role, statement_sql, user) in &access.memberships {
        let group = inputs.groups.values().chain(access.create.iter()).find(|g| &g.role == role);
        let grant = statement_sql.starts_with("GRANT");
        let mut o = op("user", user, if grant { "grant_membership" } else { "revoke_membership" }, true);
        if let Some(g) = group {
            let database = format!("{:?}", g.database);
            o.drift = take_drift(&mut drift, ObjectKind::User, user, &[g.level.as_str(), database.as_str()]);
        }
        o.statements = vec![statement(None, admin_db, statement_sql.clone())];
        plan.push_action(Phase::AccessMembers, o, Action::Membership { role: role.clone() });
    }

    for group in &access.drop {
        let mut o = op("access_group", &group_name(group), "drop_group", true);
        o.statements = vec![statement(None, admin_db, sql::roles::drop_role_sql(&group.role))];
        plan.push_action(Phase::AccessCleanup, o, Action::DropGroup(group.clone()));
    }
    for group in &access.forget {
        let note = "the group's record is removed; nothing on the target is touched".to_string();
        plan.push(
            Phase::AccessCleanup,
            PlannedStep { note: Some(note), ..op("access_group", &group_name(group), "forget", false) },
        );
    }
    access
}

/// What a group created in this pass lacks in a database with `schemas`: USAGE on each, its
/// level on the tables and sequences there, and every default privilege.
fn new_group_facts(role: &str, schemas: &[(String, bool, bool)]) -> DatabaseFacts {
    DatabaseFacts {
        schemas: schemas
            .iter()
            .map(|(schema, tables, sequences)| (role.to_string(), schema.clone(), true, *tables, *sequences))
            .collect(),
        defaults: HashMap::new(),
    }
}
