//! Access levels on a target: carries out the levels users hold per database (read_only,
//! read_write; see `pgplane_core::access`) as part of a pass, after the roles and databases.
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

use futures::stream::{self, StreamExt};
use pgplane_core::access::{new_group_role, AccessLevel, Privileges};
use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::{AccessProgress, Cluster, Database};
use pgplane_core::store::{AccessForPass, RecordedGroup, UNRECORDED_OID};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use pgplane_target_server::sql::ident;
use pgplane_target_server::{SessionLimits, TargetError, TargetSpec};

use crate::apply;
use crate::controller::Shared;
use crate::observe::Observed;

/// Databases visited at once by one pass (each visit is one session on the target).
const VISITS_AT_ONCE: usize = 4;

/// The schemas a level covers: all but PostgreSQL's own.
const USER_SCHEMAS: &str = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

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
    pub fix: Vec<String>,
    /// Databases to visit: groups to bring up to their level there, groups to drop there.
    pub visits: BTreeMap<String, Visit>,
    /// Membership GRANTs and REVOKEs, each with its group role.
    pub memberships: Vec<(String, String)>,
    /// Groups to drop once their database has been visited.
    pub drop: Vec<Group>,
    /// Records to forget without touching the server (the role is gone, or not pgplane's).
    pub forget: Vec<Group>,
    /// Drift found: (kind, name, what).
    pub drift: Vec<(ObjectKind, String, String)>,
    /// Levels that cannot be carried out yet, and why.
    pub blocked: Vec<String>,
}

/// The work in one database.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Visit {
    /// Groups to bring up to their level, and whether each is new (no drift to report).
    pub ensure: Vec<(Group, bool)>,
    pub drop: Vec<Group>,
}

/// What the access part of a pass did.
#[derive(Debug, Default)]
pub(crate) struct AccessSummary {
    /// Statements (messages) that changed the target.
    pub changes: usize,
    /// The first failure, for the pass's error.
    pub error: Option<String>,
}

/// The users whose levels wait to be carried out, read as a pass starts.
pub(crate) async fn pending(
    shared: &Shared,
    cluster: &Cluster,
) -> Result<Vec<AccessProgress>, pgplane_core::Error> {
    shared.store.pending_access(cluster.cluster_id).await
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

    fn grantor_keyed(&self) -> bool {
        self.version_num >= crate::plan::ADMIN_OPTION_VERSION_NUM
    }

    fn recorded(&self, group: &Group) -> Option<&RecordedGroup> {
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
fn conflict_message(group: &Group) -> String {
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
                Some(_) => plan.blocked.push(message),
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
            plan.blocked.push(format!(
                "the database {:?} does not exist on the target yet; its {} access waits for it",
                group.database,
                group.level.as_str()
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
                plan.fix.push(format!("COMMENT ON ROLE {} IS NULL", ident(&group.role)));
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
            plan.memberships.push((group.role.clone(), grant_membership_sql(inputs, group, user)));
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
            plan.memberships.push((group.role.clone(), revoke_membership_sql(inputs, group, member)));
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
    let role = ident(&group.role);
    let level = group.level.as_str();
    let primary = &inputs.cluster.primary_user;
    let mut drift = |what: String| {
        plan.drift.push((ObjectKind::Database, group.database.clone(), what));
    };
    if !seen.connect {
        plan.fix.push(grant_connect_sql(group));
        drift(format!("CONNECT was revoked from its {level} access group"));
    }
    if seen.login || seen.password {
        plan.fix.push(format!("ALTER ROLE {role} NOLOGIN PASSWORD NULL"));
        let what = if seen.login { "LOGIN" } else { "a password" };
        drift(format!("its {level} access group had {what} (removed)"));
    }
    let trusted = |m: &str| m == primary || m == inputs.cluster.admin_user;
    for m in &seen.memberships {
        let granted_by =
            if inputs.grantor_keyed() { format!(" GRANTED BY {}", ident(&m.grantor)) } else { String::new() };
        if trusted(&m.member) {
            continue;
        }
        if !inputs.access.users.contains(&m.member) {
            plan.fix.push(format!("REVOKE {role} FROM {}{granted_by}", ident(&m.member)));
            let held = if m.admin { "held ADMIN OPTION on" } else { "was a member of" };
            drift(format!(
                "a role that is not one of the cluster's users {held} its {level} access group (removed)"
            ));
        } else if m.admin {
            plan.fix.push(format!("REVOKE ADMIN OPTION FOR {role} FROM {}{granted_by}", ident(&m.member)));
            drift(format!("the user {:?} held ADMIN OPTION on its {level} access group (removed)", m.member));
        }
    }
    let primary_admin = seen.memberships.iter().any(|m| m.member == *primary && m.admin);
    if inputs.grantor_keyed() && !primary_admin {
        plan.fix.push(apply::grant_admin_option_sql(&group.role, primary));
    }
}

/// `CREATE ROLE` for a group, with the primary user's ADMIN OPTION (16+) and CONNECT on its
/// database: one message. No comment: nothing on the server tells whose group it is.
fn create_group_sql(inputs: &Inputs<'_>, group: &Group) -> String {
    let mut sql = format!(
        "CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; {connect}",
        role = ident(&group.role),
        connect = grant_connect_sql(group),
    );
    if inputs.grantor_keyed() {
        sql.push_str("; ");
        sql.push_str(&apply::grant_admin_option_sql(&group.role, &inputs.cluster.primary_user));
    }
    sql
}

fn grant_connect_sql(group: &Group) -> String {
    format!("GRANT CONNECT ON DATABASE {} TO {}", ident(&group.database), ident(&group.role))
}

/// A member inherits the group's privileges; on 16+ it cannot SET ROLE to it, and the grant is
/// the primary user's.
fn grant_membership_sql(inputs: &Inputs<'_>, group: &Group, user: &str) -> String {
    if inputs.grantor_keyed() {
        format!(
            "GRANT {} TO {} WITH INHERIT TRUE, SET FALSE GRANTED BY {}",
            ident(&group.role),
            ident(user),
            ident(&inputs.cluster.primary_user)
        )
    } else {
        format!("GRANT {} TO {}", ident(&group.role), ident(user))
    }
}

/// Revokes pgplane's membership only (on 16+, the primary user's grant; another grantor's
/// membership of the same user is not pgplane's to remove).
fn revoke_membership_sql(inputs: &Inputs<'_>, group: &Group, user: &str) -> String {
    if inputs.grantor_keyed() {
        format!(
            "REVOKE {} FROM {} GRANTED BY {}",
            ident(&group.role),
            ident(user),
            ident(&inputs.cluster.primary_user)
        )
    } else {
        format!("REVOKE {} FROM {}", ident(&group.role), ident(user))
    }
}

/// Reads the groups' facts on the admin session: the role under each name (its oid, LOGIN and,
/// for a superuser admin, whether it has a password), CONNECT, and every membership row. Two
/// queries, pipelined.
async fn observe_groups(
    client: &Client,
    inputs: &Inputs<'_>,
) -> Result<HashMap<String, GroupFacts>, TargetError> {
    let roles: Vec<&str> = inputs.groups.values().map(|g| g.role.as_str()).collect();
    let databases: Vec<&str> = inputs.groups.values().map(|g| g.database.as_str()).collect();
    let primary = inputs.cluster.primary_user.as_str();
    // pg_authid (with rolpassword) is readable by superusers only; pg_roles masks passwords.
    let (catalog, password) = if inputs.admin_is_superuser {
        ("pg_authid", "r.rolpassword IS NOT NULL")
    } else {
        ("pg_roles", "false")
    };
    let found_sql = format!(
        "SELECT c.name, r.oid::int8, d.oid IS NOT NULL,
                coalesce(r.oid IS NOT NULL AND d.oid IS NOT NULL
                         AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT'), false),
                coalesce(r.rolcanlogin, false), coalesce({password}, false)
           FROM unnest($1::text[], $2::text[]) AS c(name, db)
           LEFT JOIN pg_catalog.{catalog} r ON r.rolname = c.name
           LEFT JOIN pg_catalog.pg_database d ON d.datname = c.db"
    );
    // On 16+ only the primary user's grant, with INHERIT and without SET, is pgplane's.
    let ours = if inputs.grantor_keyed() {
        "m.grantor = p.oid AND m.inherit_option AND NOT m.set_option"
    } else {
        "true"
    };
    let members_sql = format!(
        "SELECT g.rolname::text, u.rolname::text, coalesce(gr.rolname::text, ''), m.admin_option, {ours}
           FROM pg_catalog.pg_auth_members m
           JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
           JOIN pg_catalog.pg_roles u ON u.oid = m.member
           LEFT JOIN pg_catalog.pg_roles gr ON gr.oid = m.grantor
           LEFT JOIN pg_catalog.pg_roles p ON p.rolname = $2
          WHERE g.rolname = ANY($1)"
    );
    let by_group: [&(dyn ToSql + Sync); 2] = [&roles, &databases];
    let by_member: [&(dyn ToSql + Sync); 2] = [&roles, &primary];
    let (found, members) =
        futures::try_join!(client.query(&found_sql, &by_group), client.query(&members_sql, &by_member))?;
    let mut facts: HashMap<String, GroupFacts> = found
        .iter()
        .map(|row| {
            let facts = GroupFacts {
                oid: row.get(1),
                database_exists: row.get(2),
                connect: row.get(3),
                login: row.get(4),
                password: row.get(5),
                memberships: Vec::new(),
            };
            (row.get::<_, String>(0), facts)
        })
        .collect();
    for row in &members {
        let Some(group) = facts.get_mut(row.get::<_, &str>(0)) else { continue };
        group.memberships.push(Membership {
            member: row.get(1),
            grantor: row.get(2),
            admin: row.get(3),
            pgplanes: row.get(4),
        });
    }
    Ok(facts)
}

/// What one database shows about its groups: per group, the schemas where something of its
/// level is missing, and whether its default privileges are complete.
#[derive(Debug, Default)]
struct DatabaseFacts {
    /// (group role, schema) → (USAGE missing, some table lacks privileges, some sequence does).
    schemas: Vec<(String, String, bool, bool, bool)>,
    /// (group role, object type letter) → the default privileges the primary user gives it.
    defaults: HashMap<(String, String), BTreeSet<String>>,
}

async fn observe_database(
    client: &Client,
    groups: &[(Group, bool)],
    primary: &str,
) -> Result<DatabaseFacts, TargetError> {
    let roles: Vec<&str> = groups.iter().map(|(g, _)| g.role.as_str()).collect();
    let tables: Vec<String> = groups.iter().map(|(g, _)| g.level.privileges().tables.join(",")).collect();
    let sequences: Vec<String> =
        groups.iter().map(|(g, _)| g.level.privileges().sequences.join(",")).collect();
    let all_of = |check: &str, list: &str| {
        format!(
            "NOT (SELECT bool_and(pg_catalog.{check}(c.g, t.oid, p))
                    FROM unnest(string_to_array(c.{list}, ',')) AS p)"
        )
    };
    // One scan of the database's relations (pg_class has no index on relnamespace alone), each
    // checked against every group's level; then one row per (group, schema) lacking anything.
    let schemas_sql = format!(
        "SELECT c.g, n.nspname::text,
                NOT pg_catalog.has_schema_privilege(c.g, n.oid, 'USAGE'),
                coalesce(bool_or(t.relkind <> 'S' AND {tables}), false),
                coalesce(bool_or(t.relkind = 'S' AND {sequences}), false)
           FROM unnest($1::text[], $2::text[], $3::text[]) AS c(g, tp, sp)
          CROSS JOIN pg_catalog.pg_namespace n
           LEFT JOIN pg_catalog.pg_class t
                  ON t.relnamespace = n.oid AND t.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          WHERE {USER_SCHEMAS}
          GROUP BY c.g, n.oid, n.nspname
         HAVING NOT pg_catalog.has_schema_privilege(c.g, n.oid, 'USAGE')
             OR coalesce(bool_or(t.relkind <> 'S' AND {tables}), false)
             OR coalesce(bool_or(t.relkind = 'S' AND {sequences}), false)
          ORDER BY 1, 2",
        tables = all_of("has_table_privilege", "tp"),
        sequences = all_of("has_sequence_privilege", "sp"),
    );
    let by_group: [&(dyn ToSql + Sync); 3] = [&roles, &tables, &sequences];
    let by_grantee: [&(dyn ToSql + Sync); 2] = [&roles, &primary];
    let (schemas, defaults) = futures::try_join!(
        client.query(&schemas_sql, &by_group),
        client.query(
            "SELECT c.g, d.defaclobjtype::text, a.privilege_type::text
               FROM unnest($1::text[]) AS c(g)
               JOIN pg_catalog.pg_roles r ON r.rolname = c.g
               JOIN pg_catalog.pg_default_acl d
                 ON d.defaclnamespace = 0
                AND d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)
              CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a
              WHERE a.grantee = r.oid",
            &by_grantee,
        ),
    )?;
    let mut facts = DatabaseFacts {
        schemas: schemas.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect(),
        ..DatabaseFacts::default()
    };
    for row in &defaults {
        facts.defaults.entry((row.get(0), row.get(1))).or_default().insert(row.get(2));
    }
    Ok(facts)
}

/// The default-privilege object types a level covers, with what it grants on each.
fn default_kinds(p: Privileges) -> [(&'static str, &'static str, &'static [&'static str]); 3] {
    [("r", "TABLES", p.tables), ("S", "SEQUENCES", p.sequences), ("n", "SCHEMAS", p.schemas)]
}

/// The statements that bring `groups` up to their level in one database, given its facts, and
/// what was found missing on groups that existed before this pass (drift).
fn database_statements(
    groups: &[(Group, bool)],
    facts: &DatabaseFacts,
    primary: &str,
) -> (Vec<String>, Vec<String>) {
    let mut statements = Vec::new();
    let mut drift = Vec::new();
    for (group, new) in groups {
        let privileges = group.level.privileges();
        let role = ident(&group.role);
        let mut missing = Vec::new();
        for (_, schema, usage, tables, sequences) in facts.schemas.iter().filter(|s| s.0 == group.role) {
            let schema_ident = ident(schema);
            if *usage {
                statements.push(format!("GRANT USAGE ON SCHEMA {schema_ident} TO {role}"));
            }
            if *tables {
                statements.push(format!(
                    "GRANT {} ON ALL TABLES IN SCHEMA {schema_ident} TO {role}",
                    privileges.tables.join(", ")
                ));
            }
            if *sequences {
                statements.push(format!(
                    "GRANT {} ON ALL SEQUENCES IN SCHEMA {schema_ident} TO {role}",
                    privileges.sequences.join(", ")
                ));
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
            statements.push(format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT {} ON {objects} TO {role}",
                ident(primary),
                wanted.join(", ")
            ));
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

/// What visiting one database did.
#[derive(Default)]
struct Visited {
    /// Messages that changed the target.
    changes: usize,
    /// Drift found on groups that existed before the pass.
    drift: Vec<String>,
    error: Option<TargetError>,
}

/// One database's share of the work: observe, then one message with every statement (one
/// implicit transaction), then DROP OWNED for the groups to drop.
async fn visit(client: &Client, work: &Visit, primary: &str) -> Visited {
    let mut done = Visited::default();
    if !work.ensure.is_empty() {
        let facts = match observe_database(client, &work.ensure, primary).await {
            Ok(f) => f,
            Err(e) => return Visited { error: Some(e), ..done },
        };
        let (statements, drift) = database_statements(&work.ensure, &facts, primary);
        done.drift = drift;
        if !statements.is_empty() {
            match client.batch_execute(&statements.join("; ")).await {
                Ok(()) => done.changes += 1,
                Err(e) => return Visited { error: Some(e.into()), ..done },
            }
        }
    }
    if !work.drop.is_empty() {
        let roles: Vec<String> = work.drop.iter().map(|g| ident(&g.role)).collect();
        match client.batch_execute(&format!("DROP OWNED BY {}", roles.join(", "))).await {
            Ok(()) => done.changes += 1,
            Err(e) => done.error = Some(e.into()),
        }
    }
    done
}

/// Visits one database: on the admin session when it is the admin database, otherwise on a
/// session of its own, closed when the visit ends (it must not keep the database from being
/// dropped).
async fn visit_database<'a>(
    spec: &TargetSpec,
    admin: &Client,
    limits: SessionLimits,
    database: &'a String,
    work: &Visit,
    primary: &str,
) -> (&'a String, Visited) {
    let done = if database == spec.admin_database() {
        visit(admin, work, primary).await
    } else {
        match spec.connect(database, limits).await {
            Ok(session) => visit(&session, work, primary).await,
            Err(e) => Visited { error: Some(e), ..Visited::default() },
        }
    };
    (database, done)
}

/// Carries out the cluster's access levels on the target (after its roles and databases), and
/// records each pending user's outcome. `client` is the pass's admin session. The levels are
/// read now, after the pass recorded its role and database outcomes, so that a user or database
/// found in conflict in this pass is left alone.
#[expect(clippy::too_many_arguments, reason = "the pass's parts, each needed here")]
pub(crate) async fn reconcile(
    shared: &Shared,
    cluster: &Cluster,
    spec: &TargetSpec,
    client: &Client,
    observed: &Observed,
    full: bool,
    databases: &[Database],
    pending: Vec<AccessProgress>,
) -> Result<AccessSummary, pgplane_core::Error> {
    let access = shared.store.access_for_pass(cluster.cluster_id, pending).await?;
    let inputs =
        Inputs::new(cluster, observed.version_num, observed.admin_is_superuser, full, &access, databases);
    if inputs.groups.is_empty() && access.pending.is_empty() {
        return Ok(AccessSummary::default());
    }
    let mut summary = AccessSummary::default();
    let result = carry_out(shared, &inputs, spec, client, &mut summary).await;
    if let Err(e) = result {
        summary.error.get_or_insert_with(|| e.to_string());
    }
    let message = summary.error.as_deref();
    let outcomes: Vec<(&str, i64, Option<&str>)> =
        access.pending.iter().map(|p| (p.name.as_str(), p.access_generation, message)).collect();
    shared.store.record_access(cluster.cluster_id, &outcomes).await?;
    if let Some(e) = &summary.error {
        tracing::warn!(cluster.id = %cluster.cluster_id, error = %e, "access levels not carried out");
    }
    Ok(summary)
}

/// Creates a group role in a transaction that commits only once its oid is recorded in the
/// metadata: whatever stands under the name later with another oid is not pgplane's. A role
/// that appeared under the name meanwhile is recorded as a conflict.
async fn create_group(
    shared: &Shared,
    inputs: &Inputs<'_>,
    client: &Client,
    group: &Group,
) -> Result<(), String> {
    let id = inputs.cluster.cluster_id;
    let created = async {
        client.batch_execute(&format!("BEGIN; {}", create_group_sql(inputs, group))).await?;
        let row = client
            .query_one("SELECT oid::int8 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&group.role])
            .await?;
        shared.store.record_access_group_oid(id, &group.role, row.get(0)).await.map_err(store_error)?;
        client.batch_execute("COMMIT").await?;
        Ok::<(), TargetError>(())
    }
    .await;
    let Err(e) = created else { return Ok(()) };
    // Nothing of it may stay (an aborted transaction would also hold the session).
    let _ = client.batch_execute("ROLLBACK").await;
    if e.sqlstate() != Some(apply::DUPLICATE_OBJECT) {
        return Err(e.to_string());
    }
    let message = conflict_message(group);
    shared
        .store
        .record_access_group_conflicts(id, &[(&group.role, Some(&message))])
        .await
        .map_err(|e| e.to_string())?;
    Err(message)
}

/// Observes, plans and applies; failures of single steps are kept in `summary` (the first
/// one) while the other steps go ahead; only a failure to observe stops it.
async fn carry_out(
    shared: &Shared,
    inputs: &Inputs<'_>,
    spec: &TargetSpec,
    client: &Client,
    summary: &mut AccessSummary,
) -> Result<(), TargetError> {
    let cluster = inputs.cluster;
    let id = cluster.cluster_id;
    let store = &shared.store;
    let facts = observe_groups(client, inputs).await?;
    let plan = plan(inputs, &facts);
    if let Some(blocked) = plan.blocked.first() {
        failed(summary, blocked.clone());
    }
    let names: Vec<(&str, AccessLevel, &str)> =
        plan.record.iter().map(|g| (g.database.as_str(), g.level, g.role.as_str())).collect();
    store.record_access_groups(id, &names).await.map_err(store_error)?;
    let conflicts: Vec<(&str, Option<&str>)> =
        plan.conflicts.iter().map(|(g, m)| (g.role.as_str(), m.as_deref())).collect();
    store.record_access_group_conflicts(id, &conflicts).await.map_err(store_error)?;
    for (group, role) in &plan.rename {
        store.rename_access_group(id, &group.role, role).await.map_err(store_error)?;
    }
    for (group, oid) in &plan.adopt {
        store.record_access_group_oid(id, &group.role, *oid).await.map_err(store_error)?;
    }
    // Groups that could not be created get nothing: whatever stands under their names may be
    // someone else's.
    let mut unusable = BTreeSet::new();
    for group in &plan.create {
        match create_group(shared, inputs, client, group).await {
            Ok(()) => summary.changes += 1,
            Err(e) => {
                unusable.insert(group.role.as_str());
                failed(summary, e);
            }
        }
    }
    for statement in &plan.fix {
        match client.batch_execute(statement).await {
            Ok(()) => summary.changes += 1,
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    let primary = cluster.primary_user.as_str();
    let limits = shared.config.session_limits;
    let work: BTreeMap<&String, Visit> = plan
        .visits
        .iter()
        .map(|(database, visit)| {
            let usable = |g: &Group| !unusable.contains(g.role.as_str());
            let ensure = visit.ensure.iter().filter(|(g, _)| usable(g)).cloned().collect();
            (database, Visit { ensure, drop: visit.drop.clone() })
        })
        .filter(|(_, visit)| !visit.ensure.is_empty() || !visit.drop.is_empty())
        .collect();
    let visits: Vec<_> = work
        .iter()
        .map(|(database, work)| visit_database(spec, client, limits, database, work, primary))
        .collect();
    let visits: Vec<(&String, Visited)> =
        stream::iter(visits).buffer_unordered(VISITS_AT_ONCE).collect().await;
    let mut visited_ok = BTreeSet::new();
    // (kind, name, what, repaired)
    let mut drift: Vec<(ObjectKind, String, String, bool)> =
        plan.drift.iter().map(|(k, n, d)| (*k, n.clone(), d.clone(), true)).collect();
    for (database, done) in visits {
        summary.changes += done.changes;
        let repaired = done.error.is_none();
        drift.extend(done.drift.into_iter().map(|d| (ObjectKind::Database, database.clone(), d, repaired)));
        match done.error {
            None => {
                visited_ok.insert(database.as_str());
            }
            Some(e) => failed(summary, format!("database {database:?}: {e}")),
        }
    }
    for (role, statement) in &plan.memberships {
        if unusable.contains(role.as_str()) {
            continue;
        }
        match client.batch_execute(statement).await {
            Ok(()) => summary.changes += 1,
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    // A group whose database could not be visited keeps its privileges there: it stays, and
    // the next pass tries again.
    let droppable: Vec<&Group> = plan
        .drop
        .iter()
        .filter(|g| {
            !plan.visits.get(&g.database).is_some_and(|v| v.drop.contains(g))
                || visited_ok.contains(g.database.as_str())
        })
        .collect();
    let mut gone: Vec<&str> = plan.forget.iter().map(|g| g.role.as_str()).collect();
    for group in droppable {
        match client.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(&group.role))).await {
            Ok(()) => {
                summary.changes += 1;
                gone.push(group.role.as_str());
            }
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    store.forget_access_groups(id, &gone).await.map_err(store_error)?;
    for (kind, name, found, repaired) in drift {
        let outcome = if repaired && summary.error.is_none() {
            Outcome::Applied
        } else {
            Outcome::Failed(String::new())
        };
        crate::pass::drift::report_drift(shared, cluster, kind, &name, &found, &outcome)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Keeps the first failure of a pass's access work.
fn failed(summary: &mut AccessSummary, message: String) {
    summary.error.get_or_insert(message);
}

fn store_error(e: pgplane_core::Error) -> TargetError {
    TargetError::Internal(format!("metadata store: {e}"))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use pgplane_core::model::{AccessGrant, AccessProgress};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

    fn cluster() -> Cluster {
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
        }
    }

    fn grant(user: &str, database: &str, level: AccessLevel) -> AccessGrant {
        AccessGrant { user_name: user.into(), database_name: database.into(), level: level.as_str().into() }
    }

    fn pending(user: &str) -> AccessProgress {
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

    fn recorded(database: &str, level: AccessLevel, role: &str, role_oid: Option<i64>) -> RecordedGroup {
        RecordedGroup { database: database.into(), level, role: role.into(), role_oid, conflict: None }
    }

    fn membership(member: &str, grantor: &str, admin: bool, pgplanes: bool) -> Membership {
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
        let access = AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadOnly)],
            pending: vec![pending("app")],
            groups: Vec::new(),
            users: vec!["app".into(), "doadmin".into()],
        };
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
            let create = create_group_sql(&inputs, &plan.create[0]);
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
                plan.fix,
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
        assert_eq!(plan.fix, ["COMMENT ON ROLE \"g_ro\" IS NULL"]);
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
