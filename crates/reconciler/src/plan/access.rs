//! Planning access levels (pure, no I/O): from the levels users hold per database (read_only,
//! read_write; see `pgplane_core::access`) and the groups' facts observed on the target
//! (`observe::access`), what the access phases of a pass do. Carried out by `pass::access`,
//! after the roles and databases.
//!
//! Design: one NOLOGIN group role per (cluster, database, level) holds the level's privileges
//! in its database (CONNECT; USAGE on every schema but `pg_*` and `information_schema`; the
//! level's privileges on all tables and sequences there) and default privileges for what the
//! primary user creates later (tables, sequences and schemas, in every schema). A user holds a
//! level by being a member of the group. So a pass checks one membership row per user and one
//! set of privileges per group, and giving the hundredth user a level is one GRANT.
//!
//! Provenance, not names: a group's name is drawn at random (`new_group_role`) and recorded in
//! the metadata (`cluster_access_groups`) before CREATE ROLE; the role's oid is recorded before
//! its CREATE ROLE commits. A group is used only when the role under its name has the recorded
//! oid. A role found there that pgplane did not create (a tenant guessed or learnt the name) is
//! a conflict, recorded on the group and shown on the access entries that need it: it is never
//! granted anything, made a member of anything, or dropped. Each pass checks pgplane's groups:
//! no LOGIN, no password (seen only by a superuser admin: `pg_authid`), no member but the
//! cluster's users, no ADMIN OPTION but the admin role's and the primary user's; anything else
//! is revoked and recorded as drift. Nothing pgplane writes on the server names the cluster.
//!
//! Grantors are explicit and stable, so that nothing is re-granted forever on PostgreSQL 16+
//! (where memberships are keyed by grantor): memberships are granted `GRANTED BY` the primary
//! user (which holds ADMIN OPTION on each group), and only a membership with that grantor
//! counts as pgplane's; object privileges are recorded by PostgreSQL as granted by each
//! object's owner (a superuser's GRANT acts as the owner), and checked as effective privileges
//! (`has_*_privilege`), so a privilege someone else also granted is not granted again. On 15,
//! memberships are unique per (group, member) whatever the grantor and are granted plainly.
//!
//! A pass visits a database (one session, closed after) only when it must: on a full pass, every
//! database where some level is held; otherwise only where a group is created, dropped or its
//! database changed. A group no level needs any more (its last member lost it, its database or
//! user was deleted) is removed with DROP OWNED in its database and DROP ROLE: revoking a level
//! removes exactly what pgplane granted for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pgplane_core::access::{new_group_role, AccessLevel, Privileges};
use pgplane_core::lifecycle::ObjectKind;
use pgplane_core::model::{Cluster, Database};
use pgplane_core::store::{AccessForPass, RecordedGroup, UNRECORDED_OID};

use crate::sql::access as sql;
use crate::sql::roles::grant_admin_option_sql;

/// One group role: a level on a database, under the name pgplane recorded (or is about to).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Group {
    pub database: String,
    pub level: AccessLevel,
    pub role: String,
}

/// One row of `pg_auth_members` naming a group role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub member: String,
    pub grantor: String,
    pub admin: bool,
    /// Whether the row is a membership as pgplane grants it (on 16+: by the primary user, with
    /// INHERIT and without SET; on 15 every row is).
    pub pgplanes: bool,
}

/// What the admin session shows about a group's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupFacts {
    /// The oid of the role under the name, if there is one.
    pub oid: Option<i64>,
    pub database_exists: bool,
    /// The role may connect to its database (effective privilege).
    pub connect: bool,
    pub login: bool,
    /// The role has a password (known only to a superuser admin; false otherwise).
    pub password: bool,
    pub memberships: Vec<Membership>,
}

/// What one pass does about access, decided from the desired levels and the admin session's
/// view (no I/O: unit-tested directly).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AccessPlan {
    /// New names to record before their roles are created.
    pub record: Vec<Group>,
    /// Recorded groups to give a fresh name before they are created (each with the new name).
    pub rename: Vec<(Group, String)>,
    /// Groups to create, each with its CONNECT and ADMIN OPTION grants.
    pub create: Vec<Group>,
    /// Groups recorded before oids were, found and checked: their oids to record.
    pub adopt: Vec<(Group, i64)>,
    /// Conflicts to record on groups (None: the conflict is over).
    pub conflicts: Vec<(Group, Option<String>)>,
    /// Statements fixing pgplane's existing groups (CONNECT, attributes, foreign members and
    /// ADMIN holders, the primary user's ADMIN OPTION).
    pub fix: Vec<(Group, String)>,
    /// Databases to visit: groups to bring up to their level there, groups to drop there.
    pub visits: BTreeMap<String, Visit>,
    /// Membership GRANTs and REVOKEs: (group role, statement, user).
    pub memberships: Vec<(String, String, String)>,
    /// Groups to drop once their database has been visited.
    pub drop: Vec<Group>,
    /// Records to forget without touching the server (the role is gone, or not pgplane's).
    pub forget: Vec<Group>,
    /// Drift found: (kind, name, what).
    pub drift: Vec<(ObjectKind, String, String)>,
    /// Levels that cannot be carried out yet, and why.
    pub blocked: Vec<(Group, String)>,
}

/// The work in one database.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Visit {
    /// Groups to bring up to their level, and whether each is new (no drift to report).
    pub ensure: Vec<(Group, bool)>,
    pub drop: Vec<Group>,
}

/// The inputs of [`plan`] that are not the target's facts.
pub(crate) struct Inputs<'a> {
    pub cluster: &'a Cluster,
    pub version_num: i32,
    /// Whether the admin session can read `pg_authid` (role passwords).
    pub admin_is_superuser: bool,
    pub full: bool,
    pub access: &'a AccessForPass,
    /// The databases the pass read (all of them on a full pass, the changed ones otherwise).
    pub databases: &'a [Database],
    /// Every group the pass must look at, by (database, level): those pgplane recorded, and a
    /// fresh name for each level held where none is recorded yet.
    pub groups: BTreeMap<(String, AccessLevel), Group>,
}

impl<'a> Inputs<'a> {
    /// The inputs, with a name for every group the pass must look at.
    pub fn new(
        cluster: &'a Cluster,
        version_num: i32,
        admin_is_superuser: bool,
        full: bool,
        access: &'a AccessForPass,
        databases: &'a [Database],
    ) -> Self {
        let mut groups: BTreeMap<(String, AccessLevel), Group> = access
            .groups
            .iter()
            .map(|g| {
                let group = Group { database: g.database.clone(), level: g.level, role: g.role.clone() };
                ((g.database.clone(), g.level), group)
            })
            .collect();
        for grant in &access.grants {
            let key = (grant.database_name.clone(), grant.level());
            groups.entry(key).or_insert_with(|| Group {
                database: grant.database_name.clone(),
                level: grant.level(),
                role: new_group_role(grant.level()),
            });
        }
        Inputs { cluster, version_num, admin_is_superuser, full, access, databases, groups }
    }

    pub fn grantor_keyed(&self) -> bool {
        self.version_num >= super::ADMIN_OPTION_VERSION_NUM
    }

    /// The grantor of pgplane's memberships, where memberships are keyed by grantor (16+).
    pub fn granted_by(&self) -> Option<&str> {
        self.grantor_keyed().then_some(self.cluster.primary_user.as_str())
    }

    /// `CREATE ROLE` for a group, with the primary user's ADMIN OPTION (16+) and CONNECT on
    /// its database.
    pub fn create_group_sql(&self, group: &Group) -> String {
        sql::create_group_sql(&group.role, &group.database, self.granted_by())
    }

    pub(crate) fn recorded(&self, group: &Group) -> Option<&RecordedGroup> {
        self.access.groups.iter().find(|r| r.role == group.role)
    }
}

/// Whose role stands under a group's name.
enum Provenance {
    /// No role.
    Absent,
    /// The role pgplane created.
    Ours,
    /// A role recorded before oids were, to adopt once checked (its oid).
    Adopt(i64),
    /// A role pgplane did not create.
    Foreign,
}

fn provenance(seen: &GroupFacts, recorded: Option<&RecordedGroup>) -> Provenance {
    match (seen.oid, recorded.and_then(|r| r.role_oid)) {
        (None, _) => Provenance::Absent,
        (Some(oid), Some(UNRECORDED_OID)) => Provenance::Adopt(oid),
        (Some(oid), Some(ours)) if oid == ours => Provenance::Ours,
        (Some(_), _) => Provenance::Foreign,
    }
}

/// Why a role found under a group's name is not used.
pub(crate) fn conflict_message(group: &Group) -> String {
    format!(
        "conflict: a role named {} exists on the server that pgplane did not create; it is not used \
         and gets no privilege and no member. The {} access on database {:?} waits until the \
         server's operator drops it",
        group.role,
        group.level.as_str(),
        group.database
    )
}

/// Plans the access work of a pass from the desired levels and the groups' facts.
pub(crate) fn plan(inputs: &Inputs<'_>, facts: &HashMap<String, GroupFacts>) -> AccessPlan {
    let mut plan = AccessPlan::default();
    let pending: BTreeSet<&str> = inputs.access.pending.iter().map(|p| p.name.as_str()).collect();
    let changed: BTreeSet<&str> = inputs.databases.iter().map(|d| d.name.as_str()).collect();
    let mut desired: BTreeMap<(&str, AccessLevel), BTreeSet<&str>> = BTreeMap::new();
    for grant in &inputs.access.grants {
        let key = (grant.database_name.as_str(), grant.level());
        desired.entry(key).or_default().insert(grant.user_name.as_str());
    }
    let none = GroupFacts::default();
    for original in inputs.groups.values() {
        let seen = facts.get(&original.role).unwrap_or(&none);
        let recorded = inputs.recorded(original);
        let members = desired.get(&(original.database.as_str(), original.level));
        let mut group = original.clone();
        let group = &mut group;
        let provenance = provenance(seen, recorded);
        if let Provenance::Foreign = provenance {
            let message = conflict_message(group);
            if recorded.is_none_or(|r| r.conflict.as_deref() != Some(message.as_str())) {
                if recorded.is_none() {
                    plan.record.push(group.clone());
                }
                plan.conflicts.push((group.clone(), Some(message.clone())));
            }
            match members {
                Some(_) => plan.blocked.push((group.clone(), message)),
                None => plan.forget.push(group.clone()),
            }
            continue;
        }
        if recorded.is_some_and(|r| r.conflict.is_some()) {
            plan.conflicts.push((group.clone(), None));
        }
        let Some(members) = members else {
            match provenance {
                Provenance::Absent => plan.forget.push(group.clone()),
                _ => {
                    if seen.database_exists {
                        plan.visits.entry(group.database.clone()).or_default().drop.push(group.clone());
                    }
                    plan.drop.push(group.clone());
                }
            }
            continue;
        };
        if !seen.database_exists {
            plan.blocked.push((
                group.clone(),
                format!(
                    "the database {:?} does not exist on the target yet; its {} access waits for it",
                    group.database,
                    group.level.as_str()
                ),
            ));
            continue;
        }
        let new = matches!(provenance, Provenance::Absent);
        if new {
            match recorded {
                None => plan.record.push(group.clone()),
                Some(r) if r.role_oid.is_none() => {}
                Some(_) => plan.drift.push((
                    ObjectKind::Database,
                    group.database.clone(),
                    format!("its {} access group role was missing", group.level.as_str()),
                )),
            }
            if recorded.is_some_and(|r| r.role_oid == Some(UNRECORDED_OID)) {
                // A group of the time of predictable names, gone: made again under a fresh one.
                let fresh = Group { role: new_group_role(group.level), ..group.clone() };
                plan.rename.push((group.clone(), fresh.role.clone()));
                *group = fresh;
            }
            plan.create.push(group.clone());
        } else {
            if let Provenance::Adopt(oid) = provenance {
                plan.adopt.push((group.clone(), oid));
                // Groups of that time carried a comment naming the cluster.
                plan.fix.push((group.clone(), sql::clear_comment_sql(&group.role)));
            }
            check_group(inputs, group, seen, &mut plan);
        }
        let member_pending = members.iter().any(|u| pending.contains(u));
        if new || inputs.full || member_pending || changed.contains(group.database.as_str()) {
            plan.visits.entry(group.database.clone()).or_default().ensure.push((group.clone(), new));
        }
        let current = pgplanes_members(inputs, seen);
        for user in members {
            if current.contains(*user) {
                continue;
            }
            plan.memberships.push((
                group.role.clone(),
                sql::grant_membership_sql(&group.role, user, inputs.granted_by()),
                user.to_string(),
            ));
            if !new && !pending.contains(user) {
                plan.drift.push((
                    ObjectKind::User,
                    user.to_string(),
                    format!(
                        "its membership in the {} access group of database {:?} was revoked",
                        group.level.as_str(),
                        group.database
                    ),
                ));
            }
        }
        for member in current.iter().filter(|m| !members.contains(m.as_str())) {
            plan.memberships.push((
                group.role.clone(),
                sql::revoke_membership_sql(&group.role, member, inputs.granted_by()),
                member.clone(),
            ));
        }
    }
    plan
}

/// The cluster's users that are members of a group as pgplane grants memberships.
fn pgplanes_members(inputs: &Inputs<'_>, seen: &GroupFacts) -> BTreeSet<String> {
    let primary = &inputs.cluster.primary_user;
    seen.memberships
        .iter()
        .filter(|m| m.pgplanes && m.member != *primary && inputs.access.users.contains(&m.member))
        .map(|m| m.member.clone())
        .collect()
}

/// Checks one of pgplane's groups that stays: CONNECT, no LOGIN or password, no member but the
/// cluster's users, no ADMIN OPTION but the admin role's and the primary user's, the primary
/// user's ADMIN OPTION on 16+. What differs is fixed and, but for CONNECT and the primary
/// user's ADMIN OPTION (which pgplane grants itself), recorded as drift.
fn check_group(inputs: &Inputs<'_>, group: &Group, seen: &GroupFacts, plan: &mut AccessPlan) {
    let level = group.level.as_str();
    let primary = &inputs.cluster.primary_user;
    let mut fixes = Vec::new();
    let mut fix = |sql: String| fixes.push((group.clone(), sql));
    let mut drift = |what: String| {
        plan.drift.push((ObjectKind::Database, group.database.clone(), what));
    };
    if !seen.connect {
        fix(sql::grant_connect_sql(&group.database, &group.role));
        drift(format!("CONNECT was revoked from its {level} access group"));
    }
    if seen.login || seen.password {
        fix(sql::nologin_sql(&group.role));
        let what = if seen.login { "LOGIN" } else { "a password" };
        drift(format!("its {level} access group had {what} (removed)"));
    }
    let trusted = |m: &str| m == primary || m == inputs.cluster.admin_user;
    for m in &seen.memberships {
        let granted_by = inputs.grantor_keyed().then_some(m.grantor.as_str());
        if trusted(&m.member) {
            continue;
        }
        if !inputs.access.users.contains(&m.member) {
            fix(sql::revoke_membership_sql(&group.role, &m.member, granted_by));
            let held = if m.admin { "held ADMIN OPTION on" } else { "was a member of" };
            drift(format!(
                "a role that is not one of the cluster's users {held} its {level} access group (removed)"
            ));
        } else if m.admin {
            fix(sql::revoke_admin_option_sql(&group.role, &m.member, granted_by));
            drift(format!("the user {:?} held ADMIN OPTION on its {level} access group (removed)", m.member));
        }
    }
    let primary_admin = seen.memberships.iter().any(|m| m.member == *primary && m.admin);
    if inputs.grantor_keyed() && !primary_admin {
        fix(grant_admin_option_sql(&group.role, primary));
    }
    plan.fix.extend(fixes);
}

/// What one database shows about its groups: per group, the schemas where something of its
/// level is missing, and whether its default privileges are complete.
#[derive(Debug, Default)]
pub(crate) struct DatabaseFacts {
    /// (group role, schema) → (USAGE missing, some table lacks privileges, some sequence does).
    pub schemas: Vec<(String, String, bool, bool, bool)>,
    /// (group role, object type letter) → the default privileges the primary user gives it.
    pub defaults: HashMap<(String, String), BTreeSet<String>>,
}

/// The default-privilege object types a level covers, with what it grants on each.
fn default_kinds(p: Privileges) -> [(&'static str, &'static str, &'static [&'static str]); 3] {
    [("r", "TABLES", p.tables), ("S", "SEQUENCES", p.sequences), ("n", "SCHEMAS", p.schemas)]
}

/// The statements that bring `groups` up to their level in one database, given its facts, and
/// what was found missing on groups that existed before this pass (drift).
pub(crate) fn database_statements(
    groups: &[(Group, bool)],
    facts: &DatabaseFacts,
    primary: &str,
) -> (Vec<String>, Vec<String>) {
    let mut statements = Vec::new();
    let mut drift = Vec::new();
    for (group, new) in groups {
        let privileges = group.level.privileges();
        let role = &group.role;
        let mut missing = Vec::new();
        for (_, schema, usage, tables, sequences) in facts.schemas.iter().filter(|s| s.0 == group.role) {
            if *usage {
                statements.push(sql::grant_usage_sql(schema, role));
            }
            if *tables {
                statements.push(sql::grant_on_all_sql(privileges.tables, "TABLES", schema, role));
            }
            if *sequences {
                statements.push(sql::grant_on_all_sql(privileges.sequences, "SEQUENCES", schema, role));
            }
            missing.push(format!("{schema:?}"));
        }
        let mut defaults_missing = false;
        for (letter, objects, wanted) in default_kinds(privileges) {
            let have = facts.defaults.get(&(group.role.clone(), letter.to_string()));
            if wanted.iter().all(|w| have.is_some_and(|h| h.contains(*w))) {
                continue;
            }
            defaults_missing = true;
            statements.push(sql::default_privileges_sql(primary, wanted, objects, role));
        }
        if *new {
            continue;
        }
        let level = group.level.as_str();
        if !missing.is_empty() {
            drift.push(format!(
                "its {level} access group lacked privileges in schema(s) {} (revoked behind pgplane's \
                 back, or objects created there by a role other than the primary user)",
                missing.join(", ")
            ));
        }
        if defaults_missing {
            drift.push(format!("the default privileges of its {level} access group were revoked"));
        }
    }
    (statements, drift)
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use pgplane_core::model::{AccessGrant, AccessProgress};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

    pub(crate) fn cluster() -> Cluster {
        let now = Utc::now();
        Cluster {
            cluster_id: Uuid::from_u128(7),
            team_id: Uuid::from_u128(1),
            name: "c".into(),
            region: String::new(),
            size: String::new(),
            num_nodes: 1,
            tags: Vec::new(),
            host: "127.0.0.1".into(),
            port: 5432,
            admin_user: "postgres".into(),
            admin_password_sealed: Vec::new(),
            admin_database: "postgres".into(),
            sslmode: "disable".into(),
            primary_user: "doadmin".into(),
            default_database: "defaultdb".into(),
            server_version_num: 170000,
            server_version: "17".into(),
            status: pgplane_core::lifecycle::ClusterStatus::Online,
            generation: 1,
            reconciled_generation: 1,
            last_error: None,
            last_reconciled_at: None,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
            ca_certificate: None,
            last_resync_at: None,
            server_id: None,
            listing_version: None,
        }
    }

    pub(crate) fn grant(user: &str, database: &str, level: AccessLevel) -> AccessGrant {
        AccessGrant { user_name: user.into(), database_name: database.into(), level: level.as_str().into() }
    }

    /// `app` newly holds read_only on `shop`, not carried out yet; no group recorded.
    pub(crate) fn new_read_only_level() -> AccessForPass {
        AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadOnly)],
            pending: vec![pending("app")],
            groups: Vec::new(),
            users: vec!["app".into(), "doadmin".into()],
        }
    }

    pub(crate) fn pending(user: &str) -> AccessProgress {
        AccessProgress {
            name: user.into(),
            access_generation: 2,
            access_applied_generation: 1,
            access_error: None,
            updated_at: Utc::now(),
        }
    }

    fn inputs<'a>(c: &'a Cluster, version: i32, access: &'a AccessForPass) -> Inputs<'a> {
        Inputs::new(c, version, true, false, access, &[])
    }

    pub(crate) fn recorded(
        database: &str,
        level: AccessLevel,
        role: &str,
        role_oid: Option<i64>,
    ) -> RecordedGroup {
        RecordedGroup { database: database.into(), level, role: role.into(), role_oid, conflict: None }
    }

    pub(crate) fn membership(member: &str, grantor: &str, admin: bool, pgplanes: bool) -> Membership {
        Membership { member: member.into(), grantor: grantor.into(), admin, pgplanes }
    }

    /// The facts of a target on which `plan`'s result has been carried out, the groups being
    /// the roles pgplane recorded.
    fn converged(inputs: &Inputs<'_>) -> HashMap<String, GroupFacts> {
        let mut facts = HashMap::new();
        for grant in &inputs.access.grants {
            let group = &inputs.groups[&(grant.database_name.clone(), grant.level())];
            let oid = inputs.recorded(group).and_then(|r| r.role_oid);
            let entry = facts.entry(group.role.clone()).or_insert_with(|| GroupFacts {
                oid,
                database_exists: true,
                connect: true,
                memberships: vec![membership("doadmin", "postgres", true, false)],
                ..GroupFacts::default()
            });
            entry.memberships.push(membership(&grant.user_name, "doadmin", false, true));
        }
        facts
    }

    #[test]
    fn a_new_level_records_a_fresh_name_creates_its_group_and_grants_membership_by_the_primary_user() {
        let c = cluster();
        let access = new_read_only_level();
        for (version, membership) in
            [(170000, "WITH INHERIT TRUE, SET FALSE GRANTED BY \"doadmin\""), (150000, "TO \"app\"")]
        {
            let inputs = inputs(&c, version, &access);
            let role = inputs.groups[&("shop".to_string(), AccessLevel::ReadOnly)].role.clone();
            assert!(!role.contains("shop") && !role.contains(&c.cluster_id.simple().to_string()), "{role}");
            let mut facts = HashMap::new();
            facts.insert(role.clone(), GroupFacts { database_exists: true, ..GroupFacts::default() });
            let plan = plan(&inputs, &facts);
            assert_eq!(plan.record.len(), 1);
            assert_eq!(plan.create, plan.record);
            assert_eq!(plan.visits["shop"].ensure.len(), 1);
            assert_eq!(plan.memberships.len(), 1);
            assert!(plan.memberships[0].1.ends_with(membership), "{}", plan.memberships[0].1);
            assert!(plan.drift.is_empty() && plan.drop.is_empty() && plan.blocked.is_empty());
            let create = inputs.create_group_sql(&plan.create[0]);
            assert_eq!(create.contains("WITH ADMIN TRUE"), version >= 160000, "{create}");
            assert!(!create.contains("COMMENT"), "{create}");
        }
    }

    #[test]
    fn a_revoked_membership_is_granted_again_and_reported_as_drift() {
        let c = cluster();
        let access = AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadWrite)],
            pending: Vec::new(),
            groups: vec![recorded("shop", AccessLevel::ReadWrite, "g_rw", Some(41))],
            users: vec!["app".into()],
        };
        let inputs = inputs(&c, 170000, &access);
        let mut facts = converged(&inputs);
        facts.values_mut().for_each(|f| f.memberships.retain(|m| m.member != "app"));
        let plan = plan(&inputs, &facts);
        assert_eq!(plan.memberships.len(), 1);
        assert_eq!(plan.drift.len(), 1);
        assert_eq!(plan.drift[0].0, ObjectKind::User);
        assert!(plan.create.is_empty() && plan.visits.is_empty() && plan.fix.is_empty());
    }

    #[test]
    fn a_level_no_one_holds_any_more_drops_its_group_in_its_database() {
        let c = cluster();
        let access = AccessForPass {
            grants: Vec::new(),
            pending: vec![pending("app")],
            groups: vec![recorded("shop", AccessLevel::ReadOnly, "g_ro", Some(41))],
            users: vec!["app".into()],
        };
        let inputs = inputs(&c, 150000, &access);
        let mut facts = HashMap::new();
        facts.insert(
            "g_ro".to_string(),
            GroupFacts {
                oid: Some(41),
                database_exists: true,
                connect: true,
                memberships: vec![membership("app", "doadmin", false, true)],
                ..Default::default()
            },
        );
        let plan = plan(&inputs, &facts);
        assert_eq!(plan.drop.len(), 1);
        assert_eq!(plan.visits["shop"].drop.len(), 1);
        // The group goes with its memberships: no REVOKE needed.
        assert!(plan.memberships.is_empty());
    }

    #[test]
    fn a_role_pgplane_did_not_create_under_a_groups_name_is_a_conflict_and_gets_nothing() {
        let c = cluster();
        // Squatted before pgplane created its role, and replaced after it had.
        for role_oid in [None, Some(41)] {
            let access = AccessForPass {
                grants: vec![grant("app", "shop", AccessLevel::ReadOnly)],
                pending: vec![pending("app")],
                groups: vec![recorded("shop", AccessLevel::ReadOnly, "g_ro", role_oid)],
                users: vec!["app".into()],
            };
            let inputs = inputs(&c, 170000, &access);
            let mut facts = HashMap::new();
            let squatter = GroupFacts {
                oid: Some(99),
                database_exists: true,
                login: true,
                memberships: vec![membership("rival", "postgres", true, false)],
                ..Default::default()
            };
            facts.insert("g_ro".to_string(), squatter);
            let plan = plan(&inputs, &facts);
            assert_eq!(plan.conflicts.len(), 1);
            assert!(plan.conflicts[0].1.as_deref().is_some_and(|m| m.starts_with("conflict")));
            assert_eq!(plan.blocked.len(), 1);
            assert!(plan.create.is_empty() && plan.fix.is_empty() && plan.memberships.is_empty());
            assert!(plan.visits.is_empty() && plan.drop.is_empty() && plan.adopt.is_empty());
            // No level needs it any more: the record is forgotten, the role never dropped.
            let none = AccessForPass { grants: Vec::new(), ..access };
            let plan = super::plan(&self::inputs(&c, 170000, &none), &facts);
            assert_eq!(plan.forget.len(), 1);
            assert!(plan.drop.is_empty() && plan.visits.is_empty() && plan.fix.is_empty());
        }
    }

    #[test]
    fn foreign_members_admin_holders_login_and_passwords_are_removed_as_drift() {
        let c = cluster();
        let access = AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadOnly)],
            pending: Vec::new(),
            groups: vec![recorded("shop", AccessLevel::ReadOnly, "g_ro", Some(41))],
            users: vec!["app".into(), "doadmin".into()],
        };
        for (version, granted_by) in [(170000, " GRANTED BY \"postgres\""), (150000, "")] {
            let inputs = inputs(&c, version, &access);
            let mut facts = converged(&inputs);
            let f = facts.get_mut("g_ro").unwrap();
            f.login = true;
            f.password = true;
            f.memberships.push(membership("rival", "postgres", false, false));
            f.memberships.push(membership("app", "postgres", true, false));
            // The admin role's implicit ADMIN OPTION (its creator's, on 16+) is fine.
            f.memberships.push(membership("postgres", "postgres", true, false));
            let plan = plan(&inputs, &facts);
            assert_eq!(
                plan.fix.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
                [
                    "ALTER ROLE \"g_ro\" NOLOGIN PASSWORD NULL".to_string(),
                    format!("REVOKE \"g_ro\" FROM \"rival\"{granted_by}"),
                    format!("REVOKE ADMIN OPTION FOR \"g_ro\" FROM \"app\"{granted_by}"),
                ]
            );
            assert_eq!(plan.drift.len(), 3, "{:?}", plan.drift);
            assert!(plan.drift.iter().all(|d| !d.2.contains("rival")), "no foreign name in drift");
        }
    }

    #[test]
    fn a_group_recorded_before_oids_is_adopted_and_loses_its_comment() {
        let c = cluster();
        let access = AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadOnly)],
            pending: Vec::new(),
            groups: vec![recorded("shop", AccessLevel::ReadOnly, "g_ro", Some(UNRECORDED_OID))],
            users: vec!["app".into()],
        };
        let inputs = inputs(&c, 150000, &access);
        let mut facts = converged(&inputs);
        facts.get_mut("g_ro").unwrap().oid = Some(41);
        let plan = plan(&inputs, &facts);
        assert_eq!(plan.adopt.len(), 1);
        assert_eq!(plan.adopt[0].1, 41);
        assert_eq!(
            plan.fix,
            [(
                Group { database: "shop".into(), level: AccessLevel::ReadOnly, role: "g_ro".into() },
                "COMMENT ON ROLE \"g_ro\" IS NULL".to_string()
            )]
        );
        assert!(plan.conflicts.is_empty() && plan.create.is_empty());
        // Gone from the server: made again under a fresh, unpredictable name.
        let mut facts = HashMap::new();
        facts.insert("g_ro".to_string(), GroupFacts { database_exists: true, ..GroupFacts::default() });
        let plan = super::plan(&inputs, &facts);
        assert_eq!(plan.rename.len(), 1);
        assert_eq!(plan.rename[0].0.role, "g_ro");
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].role, plan.rename[0].1);
        assert!(plan.create[0].role.starts_with(pgplane_core::access::GROUP_PREFIX));
        assert!(plan.memberships[0].1.contains(&plan.create[0].role), "{:?}", plan.memberships);
        assert!(plan.record.is_empty());
    }

    #[test]
    fn read_only_statements_never_grant_writes_or_create() {
        let group = Group {
            database: "shop".into(),
            level: AccessLevel::ReadOnly,
            role: new_group_role(AccessLevel::ReadOnly),
        };
        let facts = DatabaseFacts {
            schemas: vec![(group.role.clone(), "public".into(), true, true, true)],
            defaults: HashMap::new(),
        };
        let (statements, drift) = database_statements(&[(group, false)], &facts, "doadmin");
        assert_eq!(statements.len(), 6, "{statements:?}");
        assert_eq!(drift.len(), 2);
        for s in &statements {
            for word in ["INSERT", "UPDATE", "DELETE", "TRUNCATE", "CREATE", "ALL PRIVILEGES"] {
                assert!(!s.contains(word), "{s}");
            }
        }
    }

    proptest! {
        /// Whatever levels users hold, on either version, a target that matches them plans
        /// nothing: no statement, no visit on a changed-only pass, no drift.
        #[test]
        fn a_converged_target_plans_nothing(
            grants in proptest::collection::vec((0..4usize, 0..3usize, any::<bool>()), 0..12),
            new_major in any::<bool>(),
        ) {
            let c = cluster();
            let mut seen = BTreeSet::new();
            let grants: Vec<AccessGrant> = grants
                .into_iter()
                .filter(|(u, d, _)| seen.insert((*u, *d)))
                .map(|(u, d, rw)| {
                    let level = if rw { AccessLevel::ReadWrite } else { AccessLevel::ReadOnly };
                    grant(&format!("u{u}"), &format!("d{d}"), level)
                })
                .collect();
            let users = (0..4).map(|u| format!("u{u}")).collect();
            let mut access = AccessForPass { grants, pending: Vec::new(), groups: Vec::new(), users };
            let version = if new_major { 170000 } else { 150000 };
            let first = Inputs::new(&c, version, true, false, &access, &[]);
            let groups: Vec<RecordedGroup> = first
                .groups
                .values()
                .zip(1..)
                .map(|(g, oid)| recorded(&g.database, g.level, &g.role, Some(oid)))
                .collect();
            access.groups = groups;
            let inputs = Inputs::new(&c, version, true, false, &access, &[]);
            let plan = plan(&inputs, &converged(&inputs));
            prop_assert_eq!(plan, AccessPlan::default());
        }
    }
}
