//! The pure heart of a pass: compare desired objects with what the target shows and decide one
//! step per user and database (here), what the access levels need (`access`), the drift each
//! step repairs (`drift`), and the whole pass as one ordered value (`pass`). No I/O here, so
//! the rules are unit-tested directly (`snapshots` keeps representative plans); a pass over a
//! target that already matches plans no DDL at all.

pub(crate) mod access;
pub(crate) mod drift;
pub(crate) mod pass;
#[cfg(test)]
mod snapshots;

use pgplane_core::lifecycle::DesiredState;

use pgplane_core::parameters::{same_value, RoleParameter};

use crate::observe::{FoundSetting, Observed, RoleAttrs, RoleFacts};

/// PostgreSQL 16 changed CREATEROLE: non-superusers can manage only roles they hold ADMIN
/// OPTION on, so from 16 on the primary user has CREATEROLE and is granted ADMIN OPTION on every
/// role pgplane creates. Before 16, CREATEROLE reaches every non-superuser role on the server
/// (another cluster's users included) and lets its holder grant itself any of them,
/// `pg_execute_server_program` (a shell on the server) among them: there the primary user does
/// not get it. The same version keys memberships by grantor and gives each its INHERIT and SET
/// options, which access levels rely on (`access`).
pub(crate) const ADMIN_OPTION_VERSION_NUM: i32 = 160000;

/// A role as the metadata says it should be.
#[derive(Debug, Clone)]
pub(crate) struct DesiredRole {
    pub name: String,
    pub primary: bool,
    pub allow_replication: bool,
    pub verifier: String,
    pub state: DesiredState,
    pub claimed: bool,
    /// The desired state changed since it was last applied (new, reset, settings).
    pub changed: bool,
    /// Who inherits what the role owns when it is dropped (None: the primary user).
    pub reassign_to: Option<String>,
    /// Why a power it asks for is withheld (`pass::powers`), or why some of its parameters
    /// wait ([`waits_for_a_database`]): its step then ends failed.
    pub withheld: Option<&'static str>,
    /// -1: no limit.
    pub connection_limit: i32,
    /// Session parameters, in every database or in one of the cluster's.
    pub parameters: Vec<RoleParameter>,
    /// Its `VALID UNTIL`, in microseconds since the Unix epoch (None: never).
    pub valid_until: Option<i64>,
    /// It expired before the pass read it, or it is a login whose use has ended (the old one
    /// of a rotation, after its grace): its sessions are ended.
    pub expired: bool,
    /// It accepts logins: false for the login of a rotation that is not current, once its
    /// grace is over.
    pub login: bool,
    /// For a user's alternate login: the user's role, which it is a member of and acts as at
    /// each login (`SET role`), so that what it creates belongs to that role.
    pub acts_as: Option<String>,
}

impl DesiredRole {
    /// The attributes this role must have on a server of `version_num`: LOGIN and nothing else
    /// for normal users (plus REPLICATION when asked for, and their expiry); the primary user also gets CREATEDB,
    /// and CREATEROLE from PostgreSQL 16 on (see [`ADMIN_OPTION_VERSION_NUM`]).
    pub fn attrs(&self, version_num: i32) -> RoleAttrs {
        RoleAttrs {
            superuser: false,
            createdb: self.primary,
            createrole: self.primary && version_num >= ADMIN_OPTION_VERSION_NUM,
            login: self.login,
            replication: self.allow_replication,
            bypassrls: false,
            connection_limit: self.connection_limit,
            valid_until: self.valid_until,
        }
    }
}

/// How pgplane's admin role is made a member of the primary user, so that it may act as the
/// owner of the cluster's databases (`CREATE DATABASE … OWNER`, `ALTER DATABASE … OWNER TO`
/// and default privileges need it of an admin that is not a superuser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminMembership {
    /// Before PostgreSQL 16: a plain membership.
    Member,
    /// PostgreSQL 16+: with INHERIT (default privileges `FOR ROLE` the primary user need its
    /// privileges) and SET (`OWNER` needs it). The admin role may manage every role of the
    /// cluster already; no tenant logs in as it.
    InheritAndSet,
}

/// How an admin role that is not a superuser takes a role's privileges on this server (None
/// for a superuser, which has them all).
pub(crate) fn admin_membership(observed: &Observed) -> Option<AdminMembership> {
    (!observed.admin_is_superuser).then_some(if observed.version_num >= ADMIN_OPTION_VERSION_NUM {
        AdminMembership::InheritAndSet
    } else {
        AdminMembership::Member
    })
}

/// The membership the admin role lacks in `role`, when `role` is the primary user.
fn admin_member(role: &DesiredRole, observed: &Observed) -> Option<AdminMembership> {
    admin_membership(observed).filter(|_| role.primary && !observed.admin_sets_primary)
}

/// Ending the sessions of a role that expired while some were open. `pg_terminate_backend`
/// needs the role's privileges: an admin that is not a superuser takes them for the time of the
/// statement (`as_member`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndSessions {
    pub as_member: Option<AdminMembership>,
}

/// What makes an alternate login act as its user's role: a membership (with INHERIT, so that
/// it may connect where the user may, and from PostgreSQL 16 SET, which `SET role` needs) and
/// the `role` setting that each of its sessions starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActsAs {
    pub owner: String,
    /// PostgreSQL 16+: the membership's options are named.
    pub with_options: bool,
}

/// The membership and setting `role` lacks to act as its user's role (see [`ActsAs`]).
fn acts_as(role: &DesiredRole, facts: Option<&RoleFacts>, observed: &Observed) -> Option<ActsAs> {
    let owner = role.acts_as.as_ref()?;
    let done = facts.is_some_and(|f| f.member_of.contains(owner) && f.acts_as.as_ref() == Some(owner));
    (!done).then(|| ActsAs {
        owner: owner.clone(),
        with_options: observed.version_num >= ADMIN_OPTION_VERSION_NUM,
    })
}

/// One parameter setting of a role to change: set to `value`, or reset (None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingChange {
    /// None: every database.
    pub database: Option<String>,
    pub name: String,
    pub value: Option<String>,
}

/// Why a role's step ends failed while a parameter of it names a database that is not on the
/// target as the cluster's (not created yet, or another's under that name).
pub(crate) const WAITING_DATABASE: &str =
    "a parameter of this user names a database that is not on the target yet; it is set once the database is";

/// Whether `database` (None: every database) is one where the role's parameters may be set: the
/// cluster's, owned by its primary user.
fn ours(database: Option<&str>, owner: Option<&str>, primary_user: &str) -> bool {
    database.is_none() || owner == Some(primary_user)
}

/// Whether `parameter` may be set now: in every database, or in one the target shows as the
/// cluster's.
fn settable(parameter: &RoleParameter, observed: &Observed, primary_user: &str) -> bool {
    let owner = parameter.database.as_ref().and_then(|d| observed.databases.get(d));
    ours(parameter.database.as_deref(), owner.map(String::as_str), primary_user)
}

/// Whether some parameter of `role` names a database that is not the cluster's on the target.
pub(crate) fn waits_for_a_database(role: &DesiredRole, observed: &Observed, primary_user: &str) -> bool {
    role.parameters.iter().any(|p| !settable(p, observed, primary_user))
}

/// The parameter settings that bring `found` to what `role` wants, in the cluster's databases
/// only (settings in other databases, and parameters pgplane does not manage, are left alone).
fn setting_changes(
    role: &DesiredRole,
    found: &[FoundSetting],
    observed: &Observed,
    primary_user: &str,
) -> Vec<SettingChange> {
    let mut changes = Vec::new();
    for wanted in role.parameters.iter().filter(|p| settable(p, observed, primary_user)) {
        let same = found.iter().any(|f| {
            f.database == wanted.database
                && f.name == wanted.name
                && same_value(&f.name, &f.value, &wanted.value)
        });
        if !same {
            changes.push(SettingChange {
                database: wanted.database.clone(),
                name: wanted.name.clone(),
                value: Some(wanted.value.clone()),
            });
        }
    }
    for f in found {
        let unwanted = !role.parameters.iter().any(|w| w.database == f.database && w.name == f.name);
        if unwanted && ours(f.database.as_deref(), f.database_owner.as_deref(), primary_user) {
            changes.push(SettingChange { database: f.database.clone(), name: f.name.clone(), value: None });
        }
    }
    changes
}

/// A database as the metadata says it should be.
#[derive(Debug, Clone)]
pub(crate) struct DesiredDatabase {
    pub name: String,
    pub state: DesiredState,
    pub claimed: bool,
}

/// What to do about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The target already matches.
    InSync,
    CreateRole {
        attrs: RoleAttrs,
        ties: RoleTies,
    },
    /// Fix attributes and/or the password, and/or what ties the role to others (see
    /// [`RoleTies`]), and/or end the sessions of an expired role.
    AlterRole {
        attrs: RoleAttrs,
        /// The attributes as found: only those that differ are named.
        was: RoleAttrs,
        set_password: bool,
        ties: RoleTies,
        /// It expired and sessions are open.
        end_sessions: Option<EndSessions>,
    },
    /// End sessions, REASSIGN OWNED to and DROP OWNED in every database, then DROP ROLE.
    DropRole {
        reassign_to: String,
    },
    CreateDatabase {
        owner: String,
    },
    AlterDatabaseOwner {
        owner: String,
    },
    DropDatabase,
    /// Deletion requested and nothing of ours is on the target: just forget the row.
    Forget,
    /// A same-named object pgplane does not manage exists: never touch it.
    Conflict(String),
}

/// What a role's CREATE or ALTER is followed by, in the same message, where it is missing:
/// the primary user's ADMIN OPTION on it, parameter settings, the admin role's membership in
/// it, and an alternate login's acting as its user's role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoleTies {
    pub grant_admin_to: Option<String>,
    pub settings: Vec<SettingChange>,
    pub admin_member: Option<AdminMembership>,
    pub acts_as: Option<ActsAs>,
}

impl RoleTies {
    /// Nothing is missing.
    fn is_empty(&self) -> bool {
        self.grant_admin_to.is_none()
            && self.settings.is_empty()
            && self.admin_member.is_none()
            && self.acts_as.is_none()
    }
}

impl Step {
    /// The step's name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Step::InSync => "in_sync",
            Step::CreateRole { .. } => "create_role",
            Step::AlterRole { .. } => "alter_role",
            Step::DropRole { .. } => "drop_role",
            Step::CreateDatabase { .. } => "create_database",
            Step::AlterDatabaseOwner { .. } => "alter_database_owner",
            Step::DropDatabase => "drop_database",
            Step::Forget => "forget",
            Step::Conflict(_) => "conflict",
        }
    }

    /// Whether this step issues DDL on the target.
    pub fn changes_target(&self) -> bool {
        !matches!(self, Step::InSync | Step::Forget | Step::Conflict(_))
    }
}

/// Plans the step for one role.
pub(crate) fn plan_role(role: &DesiredRole, observed: &Observed, primary_user: &str) -> Step {
    let existing = observed.roles.get(&role.name);
    match (role.state, existing) {
        (DesiredState::Absent, Some(_)) if role.claimed => Step::DropRole {
            reassign_to: role.reassign_to.clone().unwrap_or_else(|| primary_user.to_string()),
        },
        (DesiredState::Absent, _) => Step::Forget,
        (DesiredState::Present, None) => Step::CreateRole {
            attrs: role.attrs(observed.version_num),
            ties: RoleTies {
                grant_admin_to: admin_grantee(role, observed, primary_user, true),
                settings: setting_changes(role, &[], observed, primary_user),
                admin_member: admin_member(role, observed),
                acts_as: acts_as(role, None, observed),
            },
        },
        (DesiredState::Present, Some(_)) if !role.claimed && !role.primary => {
            Step::Conflict(unmanaged("role", &role.name))
        }
        (DesiredState::Present, Some(facts)) => {
            let attrs = role.attrs(observed.version_num);
            let password_drifted = facts.password.as_ref().is_some_and(|p| *p != role.verifier);
            let set_password = role.changed || password_drifted;
            let ties = RoleTies {
                grant_admin_to: admin_grantee(role, observed, primary_user, false),
                settings: setting_changes(role, &facts.settings, observed, primary_user),
                admin_member: admin_member(role, observed),
                acts_as: acts_as(role, Some(facts), observed),
            };
            let end_sessions = (role.expired && facts.sessions > 0)
                .then(|| EndSessions { as_member: admin_membership(observed) });
            if facts.attrs == attrs && !set_password && ties.is_empty() && end_sessions.is_none() {
                Step::InSync
            } else {
                Step::AlterRole { attrs, was: facts.attrs, set_password, ties, end_sessions }
            }
        }
    }
}

/// The primary user, when it must be granted ADMIN OPTION on `role`: never on its own second
/// login, a member of it (the grant would make the two members of each other, which PostgreSQL
/// refuses).
fn admin_grantee(role: &DesiredRole, observed: &Observed, primary_user: &str, new: bool) -> Option<String> {
    let needed = !role.primary
        && role.acts_as.as_deref() != Some(primary_user)
        && observed.version_num >= ADMIN_OPTION_VERSION_NUM
        && (new || !observed.primary_admin_of.contains(&role.name));
    needed.then(|| primary_user.to_string())
}

/// Plans the step for one database.
pub(crate) fn plan_database(db: &DesiredDatabase, observed: &Observed, primary_user: &str) -> Step {
    match (db.state, observed.databases.get(&db.name)) {
        (DesiredState::Absent, Some(_)) if db.claimed => Step::DropDatabase,
        (DesiredState::Absent, _) => Step::Forget,
        (DesiredState::Present, None) => Step::CreateDatabase { owner: primary_user.to_string() },
        (DesiredState::Present, Some(_)) if !db.claimed => Step::Conflict(unmanaged("database", &db.name)),
        (DesiredState::Present, Some(owner)) if owner != primary_user => {
            Step::AlterDatabaseOwner { owner: primary_user.to_string() }
        }
        (DesiredState::Present, Some(_)) => Step::InSync,
    }
}

/// The role that inherits from a DropRole step: its heir, or the primary user when the heir is
/// `gone`.
pub(crate) fn inheriting<'s>(step: &'s Step, gone: &[String], primary_user: &'s str) -> Option<&'s str> {
    heir_of(step).map(|h| if gone.iter().any(|g| g == h) { primary_user } else { h })
}

/// The role a DropRole step hands the dropped role's objects to.
pub(crate) fn heir_of(step: &Step) -> Option<&str> {
    match step {
        Step::DropRole { reassign_to } => Some(reassign_to),
        _ => None,
    }
}

fn unmanaged(noun: &str, name: &str) -> String {
    format!(
        "a {noun} named {name:?} already exists on the target server and is not managed by \
         pgplane; it was left untouched"
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// A superuser's view of an empty server of `version_num` (also the snapshots').
    pub(crate) fn observed(version_num: i32) -> Observed {
        Observed {
            version_num,
            version: format!("{}.1", version_num / 10000),
            server_id: "1:5432".into(),
            admin_is_superuser: true,
            roles: HashMap::new(),
            databases: HashMap::new(),
            primary_admin_of: HashSet::new(),
            admin_sets_primary: true,
            primary_foreign: Vec::new(),
            others_here: Vec::new(),
        }
    }

    /// A normal user, present and claimed, with no settings (also the snapshots').
    pub(crate) fn role(name: &str) -> DesiredRole {
        DesiredRole {
            name: name.into(),
            primary: false,
            allow_replication: false,
            verifier: "SCRAM-SHA-256$v1".into(),
            state: DesiredState::Present,
            claimed: true,
            changed: false,
            reassign_to: None,
            withheld: None,
            connection_limit: -1,
            parameters: Vec::new(),
            valid_until: None,
            expired: false,
            login: true,
            acts_as: None,
        }
    }

    fn facts(r: &DesiredRole) -> RoleFacts {
        RoleFacts {
            attrs: r.attrs(150000),
            password: Some(r.verifier.clone()),
            settings: Vec::new(),
            sessions: 0,
            member_of: Vec::new(),
            acts_as: None,
        }
    }

    /// The step that changes a role's attributes, password or settings, and nothing else (also the
    /// statements' tests).
    pub(crate) fn alter_role(
        attrs: RoleAttrs,
        was: RoleAttrs,
        set_password: bool,
        settings: Vec<SettingChange>,
    ) -> Step {
        let ties = RoleTies { settings, ..RoleTies::default() };
        Step::AlterRole { attrs, was, set_password, ties, end_sessions: None }
    }

    /// The step that creates a role with no settings or memberships.
    pub(crate) fn create_role(attrs: RoleAttrs, grant_admin_to: Option<String>) -> Step {
        Step::CreateRole { attrs, ties: RoleTies { grant_admin_to, ..RoleTies::default() } }
    }

    #[test]
    fn new_users_get_login_and_nothing_else() {
        for version in [150000, 170000] {
            let attrs = role("app").attrs(version);
            assert!(attrs.login);
            assert!(
                !attrs.superuser
                    && !attrs.createdb
                    && !attrs.createrole
                    && !attrs.replication
                    && !attrs.bypassrls
            );
        }
    }

    #[test]
    fn the_primary_user_gets_createrole_only_where_it_is_confined_to_the_cluster() {
        let primary = DesiredRole { primary: true, ..role("doadmin") };
        let on15 = primary.attrs(150000);
        assert!(on15.createdb && !on15.createrole && !on15.superuser);
        let on16 = primary.attrs(160000);
        assert!(on16.createdb && on16.createrole && !on16.superuser);
        // A primary user adopted with CREATEROLE on 15 loses it.
        let mut o = observed(150000);
        o.roles.insert("doadmin".into(), RoleFacts { attrs: on16, ..facts(&primary) });
        assert_eq!(plan_role(&primary, &o, "doadmin"), alter_role(on15, on16, false, Vec::new()));
    }

    #[test]
    fn an_expired_role_with_sessions_has_them_ended_and_one_without_is_in_sync() {
        let r = DesiredRole { valid_until: Some(1), expired: true, ..role("app") };
        let mut o = observed(170000);
        o.roles.insert("app".into(), RoleFacts { attrs: r.attrs(170000), sessions: 2, ..facts(&r) });
        o.primary_admin_of.insert("app".into());
        assert!(matches!(
            plan_role(&r, &o, "doadmin"),
            Step::AlterRole { end_sessions: Some(EndSessions { as_member: None }), set_password: false, .. }
        ));
        o.admin_is_superuser = false;
        assert!(matches!(
            plan_role(&r, &o, "doadmin"),
            Step::AlterRole {
                end_sessions: Some(EndSessions { as_member: Some(AdminMembership::InheritAndSet) }),
                ..
            }
        ));
        o.roles.insert("app".into(), RoleFacts { attrs: r.attrs(170000), sessions: 0, ..facts(&r) });
        assert_eq!(plan_role(&r, &o, "doadmin"), Step::InSync);
        // Not expired yet: its sessions stay.
        let live = DesiredRole { expired: false, ..r.clone() };
        o.roles.insert("app".into(), RoleFacts { attrs: r.attrs(170000), sessions: 2, ..facts(&r) });
        assert_eq!(plan_role(&live, &o, "doadmin"), Step::InSync);
    }

    #[test]
    fn a_matching_target_plans_nothing() {
        let mut o = observed(150000);
        let r = role("app");
        o.roles.insert("app".into(), facts(&r));
        o.databases.insert("db".into(), "doadmin".into());
        assert_eq!(plan_role(&r, &o, "doadmin"), Step::InSync);
        let d = DesiredDatabase { name: "db".into(), state: DesiredState::Present, claimed: true };
        assert_eq!(plan_database(&d, &o, "doadmin"), Step::InSync);
    }

    #[test]
    fn missing_objects_are_created_and_admin_option_granted_from_16() {
        let r = role("app");
        assert_eq!(plan_role(&r, &observed(150000), "doadmin"), create_role(r.attrs(150000), None));
        assert_eq!(
            plan_role(&r, &observed(170000), "doadmin"),
            create_role(r.attrs(170000), Some("doadmin".into()))
        );
        let d = DesiredDatabase { name: "db".into(), state: DesiredState::Present, claimed: false };
        assert_eq!(
            plan_database(&d, &observed(150000), "doadmin"),
            Step::CreateDatabase { owner: "doadmin".into() }
        );
    }

    #[test]
    fn unmanaged_objects_with_the_same_name_are_conflicts_and_untouched() {
        let mut o = observed(150000);
        let r = DesiredRole { claimed: false, ..role("taken") };
        o.roles.insert("taken".into(), facts(&r));
        assert!(matches!(plan_role(&r, &o, "doadmin"), Step::Conflict(_)));
        o.databases.insert("taken".into(), "someone".into());
        let d = DesiredDatabase { name: "taken".into(), state: DesiredState::Present, claimed: false };
        assert!(matches!(plan_database(&d, &o, "doadmin"), Step::Conflict(_)));
        // Deleting such an object forgets it and never drops the stranger's object.
        let gone = DesiredRole { state: DesiredState::Absent, ..r };
        assert_eq!(plan_role(&gone, &o, "doadmin"), Step::Forget);
        let gone_db = DesiredDatabase { state: DesiredState::Absent, ..d };
        assert_eq!(plan_database(&gone_db, &o, "doadmin"), Step::Forget);
    }

    #[test]
    fn the_primary_user_is_adopted_when_it_exists() {
        let mut o = observed(150000);
        let p = DesiredRole { primary: true, claimed: true, changed: true, ..role("doadmin") };
        o.roles.insert(
            "doadmin".into(),
            RoleFacts { attrs: role("x").attrs(150000), password: None, ..facts(&p) },
        );
        assert_eq!(
            plan_role(&p, &o, "doadmin"),
            alter_role(p.attrs(150000), role("x").attrs(150000), true, Vec::new())
        );
    }

    #[test]
    fn drift_in_attributes_password_and_owner_is_repaired() {
        let mut o = observed(150000);
        let r = role("app");
        let mut drifted = facts(&r);
        drifted.attrs.createdb = true;
        let drifted_attrs = drifted.attrs;
        o.roles.insert("app".into(), drifted);
        assert_eq!(
            plan_role(&r, &o, "doadmin"),
            alter_role(r.attrs(150000), drifted_attrs, false, Vec::new())
        );
        o.roles.insert("app".into(), RoleFacts { password: Some("md5other".into()), ..facts(&r) });
        assert_eq!(
            plan_role(&r, &o, "doadmin"),
            alter_role(r.attrs(150000), r.attrs(150000), true, Vec::new())
        );
        o.databases.insert("db".into(), "mallory".into());
        let d = DesiredDatabase { name: "db".into(), state: DesiredState::Present, claimed: true };
        assert_eq!(plan_database(&d, &o, "doadmin"), Step::AlterDatabaseOwner { owner: "doadmin".into() });
    }

    #[test]
    fn an_admin_that_is_not_a_superuser_becomes_a_member_of_the_primary_user_once() {
        let primary = DesiredRole { primary: true, ..role("doadmin") };
        for (version, membership) in
            [(150000, AdminMembership::Member), (170000, AdminMembership::InheritAndSet)]
        {
            let mut o =
                Observed { admin_is_superuser: false, admin_sets_primary: false, ..observed(version) };
            let step = plan_role(&primary, &o, "doadmin");
            assert!(
                matches!(step, Step::CreateRole { ties: RoleTies { admin_member: Some(m), .. }, .. } if m == membership),
                "{step:?}"
            );
            let sql = crate::sql::roles::role_sql("doadmin", "v", &step).unwrap();
            assert!(sql.contains("GRANT \"doadmin\" TO CURRENT_USER"), "{sql}");
            o.roles.insert("doadmin".into(), RoleFacts { attrs: primary.attrs(version), ..facts(&primary) });
            assert!(matches!(
                plan_role(&primary, &o, "doadmin"),
                Step::AlterRole { ties: RoleTies { admin_member: Some(_), .. }, .. }
            ));
            o.admin_sets_primary = true;
            assert_eq!(plan_role(&primary, &o, "doadmin"), Step::InSync);
            // Never for other users, and never for a superuser admin.
            assert!(matches!(
                plan_role(&role("app"), &o, "doadmin"),
                Step::CreateRole { ties: RoleTies { admin_member: None, .. }, .. }
            ));
        }
    }

    #[test]
    fn parameters_are_set_reset_and_compared_only_in_the_clusters_databases() {
        let mut o = observed(150000);
        o.databases.insert("ours".into(), "doadmin".into());
        o.databases.insert("theirs".into(), "mallory".into());
        let param = |db: Option<&str>, name: &str, value: &str| RoleParameter {
            name: name.into(),
            value: value.into(),
            database: db.map(str::to_string),
        };
        let found = |db: Option<&str>, owner: Option<&str>, name: &str, value: &str| FoundSetting {
            database: db.map(str::to_string),
            database_owner: owner.map(str::to_string),
            name: name.into(),
            value: value.into(),
        };
        let r = DesiredRole {
            connection_limit: 5,
            parameters: vec![
                param(None, "statement_timeout", "30s"),
                param(Some("ours"), "work_mem", "8MB"),
                param(Some("theirs"), "work_mem", "8MB"),
            ],
            ..role("app")
        };
        assert!(waits_for_a_database(&r, &o, "doadmin"), "a database of another is not the cluster's");
        let settings = vec![
            // The same value, written otherwise by hand: in sync.
            found(None, None, "statement_timeout", "30000"),
            // Set by hand where nothing is wanted: reset.
            found(Some("ours"), Some("doadmin"), "lock_timeout", "1s"),
            // In another's database: left alone.
            found(Some("theirs"), Some("mallory"), "lock_timeout", "1s"),
        ];
        o.roles.insert("app".into(), RoleFacts { settings, ..facts(&role("app")) });
        let step = plan_role(&r, &o, "doadmin");
        let change = |db: &str, name: &str, value: Option<&str>| SettingChange {
            database: Some(db.into()),
            name: name.into(),
            value: value.map(str::to_string),
        };
        assert_eq!(
            step,
            alter_role(
                r.attrs(150000),
                role("app").attrs(150000),
                false,
                vec![change("ours", "work_mem", Some("8MB")), change("ours", "lock_timeout", None)]
            )
        );
        assert_eq!(
            crate::plan::drift::role_drift(&r, &step, &o).unwrap(),
            "its connection limit was changed to -1, parameter work_mem in database \"ours\" was removed, \
             parameter lock_timeout in database \"ours\" was set to \"1s\""
        );
    }

    #[test]
    fn deletions_drop_what_exists_and_forget_what_is_gone() {
        let mut o = observed(150000);
        let r = DesiredRole { state: DesiredState::Absent, ..role("app") };
        assert_eq!(plan_role(&r, &o, "doadmin"), Step::Forget);
        o.roles.insert("app".into(), facts(&r));
        assert_eq!(plan_role(&r, &o, "doadmin"), Step::DropRole { reassign_to: "doadmin".into() });
        let with_heir = DesiredRole { reassign_to: Some("heir".into()), ..r.clone() };
        assert_eq!(plan_role(&with_heir, &o, "doadmin"), Step::DropRole { reassign_to: "heir".into() });
        let d = DesiredDatabase { name: "db".into(), state: DesiredState::Absent, claimed: true };
        assert_eq!(plan_database(&d, &o, "doadmin"), Step::Forget);
        o.databases.insert("db".into(), "doadmin".into());
        assert_eq!(plan_database(&d, &o, "doadmin"), Step::DropDatabase);
    }
}
