//! Access levels on a target: carries out the levels users hold per database (read_only,
//! read_write; see `pgplane_core::access`) as part of a pass, after the roles and databases.
//!
//! Design: one NOLOGIN group role per (cluster, database, level), named by
//! `pgplane_core::access::group_role`, holds the level's privileges in its database (CONNECT;
//! USAGE on every schema but `pg_*` and `information_schema`; the level's privileges on all
//! tables and sequences there) and default privileges for what the primary user creates later
//! (tables, sequences and schemas, in every schema). A user holds a level by being a member of
//! the group. So a pass checks one membership row per user and one set of privileges per
//! group, and giving the hundredth user a level is one GRANT.
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
//! removes exactly what pgplane granted for it. What pgplane creates is recorded in the metadata
//! (`cluster_access_groups`) before CREATE ROLE, so that it can always be found again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::stream::{self, StreamExt};
use pgplane_core::access::{group_role, AccessLevel, Privileges};
use pgplane_core::lifecycle::{DesiredState, Lifecycle, ObjectKind, Outcome};
use pgplane_core::model::{AccessProgress, Cluster, Database};
use pgplane_core::store::AccessForPass;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use pgplane_target::sql::{ident, literal};
use pgplane_target::{SessionLimits, TargetError, TargetSpec};

use crate::apply;
use crate::controller::Shared;

/// Databases visited at once by one pass (each visit is one session on the target).
const VISITS_AT_ONCE: usize = 4;

/// The schemas a level covers: all but PostgreSQL's own.
const USER_SCHEMAS: &str = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

/// One group role: a level on a database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Group {
    pub database: String,
    pub level: AccessLevel,
    pub role: String,
}

/// What the admin session shows about a group role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupFacts {
    pub exists: bool,
    pub database_exists: bool,
    /// The group may connect to its database (effective privilege).
    pub connect: bool,
    /// The primary user holds ADMIN OPTION on it (needed on 16+ to be the grantor).
    pub primary_admin: bool,
    /// Members whose membership counts as pgplane's (see the module comment).
    pub members: BTreeSet<String>,
}

/// What one pass does about access, decided from the desired levels and the admin session's
/// view (no I/O: unit-tested directly).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AccessPlan {
    /// Groups to create (recorded first), each with its CONNECT and ADMIN OPTION grants.
    pub create: Vec<Group>,
    /// Statements fixing existing groups (CONNECT, the primary user's ADMIN OPTION).
    pub fix: Vec<String>,
    /// Databases to visit: groups to bring up to their level there, groups to drop there.
    pub visits: BTreeMap<String, Visit>,
    /// Membership GRANTs and REVOKEs.
    pub memberships: Vec<String>,
    /// Groups to drop once their database has been visited.
    pub drop: Vec<Group>,
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
    pub full: bool,
    pub access: &'a AccessForPass,
    /// The databases the pass read (all of them on a full pass, the changed ones otherwise).
    pub databases: &'a [Database],
}

impl Inputs<'_> {
    fn group(&self, database: &str, level: AccessLevel) -> Group {
        Group {
            database: database.to_string(),
            level,
            role: group_role(self.cluster.cluster_id, database, level),
        }
    }

    fn grantor_keyed(&self) -> bool {
        self.version_num >= crate::plan::ADMIN_OPTION_VERSION_NUM
    }

    /// Every group the pass must look at: those some level needs, those pgplane created, and
    /// both of each database being deleted.
    pub fn universe(&self) -> BTreeSet<Group> {
        let mut groups: BTreeSet<Group> =
            self.access.grants.iter().map(|g| self.group(&g.database_name, g.level())).collect();
        groups.extend(self.access.groups.iter().map(|(d, l)| self.group(d, *l)));
        for db in self.databases.iter().filter(|d| d.desired() == DesiredState::Absent) {
            groups.extend(AccessLevel::ALL.map(|l| self.group(&db.name, l)));
        }
        groups
    }
}

/// Plans the access work of a pass from the desired levels and the groups' facts.
pub(crate) fn plan(inputs: &Inputs<'_>, facts: &HashMap<String, GroupFacts>) -> AccessPlan {
    let mut plan = AccessPlan::default();
    let primary = &inputs.cluster.primary_user;
    let pending: BTreeSet<&str> = inputs.access.pending.iter().map(|p| p.name.as_str()).collect();
    let changed: BTreeSet<&str> = inputs.databases.iter().map(|d| d.name.as_str()).collect();
    let recorded: BTreeSet<(&str, AccessLevel)> =
        inputs.access.groups.iter().map(|(d, l)| (d.as_str(), *l)).collect();
    let mut desired: BTreeMap<Group, BTreeSet<&str>> = BTreeMap::new();
    for grant in &inputs.access.grants {
        let group = inputs.group(&grant.database_name, grant.level());
        desired.entry(group).or_default().insert(grant.user_name.as_str());
    }
    let none = GroupFacts::default();
    for group in inputs.universe() {
        let seen = facts.get(&group.role).unwrap_or(&none);
        let Some(members) = desired.get(&group) else {
            if seen.exists {
                if seen.database_exists {
                    plan.visits.entry(group.database.clone()).or_default().drop.push(group.clone());
                }
                plan.drop.push(group);
            } else if recorded.contains(&(group.database.as_str(), group.level)) {
                // Already gone (dropped with its database, or by hand): just forget it.
                plan.drop.push(group);
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
        let new = !seen.exists;
        if new {
            if recorded.contains(&(group.database.as_str(), group.level)) {
                plan.drift.push((
                    ObjectKind::Database,
                    group.database.clone(),
                    format!("the {} access group role {} was missing", group.level.as_str(), group.role),
                ));
            }
            plan.create.push(group.clone());
        } else {
            if !seen.connect {
                plan.fix.push(grant_connect_sql(&group));
                plan.drift.push((
                    ObjectKind::Database,
                    group.database.clone(),
                    format!("CONNECT was revoked from its {} access group", group.level.as_str()),
                ));
            }
            if inputs.grantor_keyed() && !seen.primary_admin {
                plan.fix.push(apply::grant_admin_option_sql(&group.role, primary));
            }
        }
        let member_pending = members.iter().any(|u| pending.contains(u));
        if new || inputs.full || member_pending || changed.contains(group.database.as_str()) {
            plan.visits.entry(group.database.clone()).or_default().ensure.push((group.clone(), new));
        }
        for user in members {
            if seen.members.contains(*user) {
                continue;
            }
            plan.memberships.push(grant_membership_sql(inputs, &group, user));
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
        for member in seen.members.iter().filter(|m| !members.contains(m.as_str())) {
            plan.memberships.push(revoke_membership_sql(inputs, &group, member));
        }
    }
    plan
}

/// `CREATE ROLE` for a group, with its comment, the primary user's ADMIN OPTION (16+) and
/// CONNECT on its database: one message, so all of it happens or none.
fn create_group_sql(inputs: &Inputs<'_>, group: &Group) -> String {
    let comment = format!(
        "pgplane access group: {} on database {:?} of cluster {}",
        group.level.as_str(),
        group.database,
        inputs.cluster.cluster_id
    );
    let mut sql = format!(
        "CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; \
         COMMENT ON ROLE {role} IS {comment}; {connect}",
        role = ident(&group.role),
        comment = literal(&comment),
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

/// Reads the groups' facts on the admin session: existence, CONNECT, the primary user's ADMIN
/// OPTION and pgplane's memberships. Two queries, pipelined.
async fn observe_groups(
    client: &Client,
    inputs: &Inputs<'_>,
    groups: &BTreeSet<Group>,
) -> Result<HashMap<String, GroupFacts>, TargetError> {
    let roles: Vec<&str> = groups.iter().map(|g| g.role.as_str()).collect();
    let databases: Vec<&str> = groups.iter().map(|g| g.database.as_str()).collect();
    let primary = inputs.cluster.primary_user.as_str();
    // On 16+ only the primary user's grant, with INHERIT and without SET, is pgplane's.
    let ours = if inputs.grantor_keyed() {
        "m.grantor = p.oid AND m.inherit_option AND NOT m.set_option"
    } else {
        "true"
    };
    let members_sql = format!(
        "SELECT g.rolname::text, u.rolname::text, u.oid = p.oid AND m.admin_option, {ours}
           FROM pg_catalog.pg_auth_members m
           JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
           JOIN pg_catalog.pg_roles u ON u.oid = m.member
           LEFT JOIN pg_catalog.pg_roles p ON p.rolname = $2
          WHERE g.rolname = ANY($1)"
    );
    let by_group: [&(dyn ToSql + Sync); 2] = [&roles, &databases];
    let by_member: [&(dyn ToSql + Sync); 2] = [&roles, &primary];
    let (found, members) = futures::try_join!(
        client.query(
            "SELECT c.name, r.oid IS NOT NULL, d.oid IS NOT NULL,
                    coalesce(r.oid IS NOT NULL AND d.oid IS NOT NULL
                             AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT'), false)
               FROM unnest($1::text[], $2::text[]) AS c(name, db)
               LEFT JOIN pg_catalog.pg_roles r ON r.rolname = c.name
               LEFT JOIN pg_catalog.pg_database d ON d.datname = c.db",
            &by_group,
        ),
        client.query(&members_sql, &by_member),
    )?;
    let mut facts: HashMap<String, GroupFacts> = found
        .iter()
        .map(|row| {
            let facts = GroupFacts {
                exists: row.get(1),
                database_exists: row.get(2),
                connect: row.get(3),
                ..GroupFacts::default()
            };
            (row.get::<_, String>(0), facts)
        })
        .collect();
    for row in &members {
        let Some(group) = facts.get_mut(row.get::<_, &str>(0)) else { continue };
        let member: String = row.get(1);
        if row.get::<_, bool>(2) {
            group.primary_admin = true;
        } else if member != primary && row.get::<_, bool>(3) {
            group.members.insert(member);
        }
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
    version_num: i32,
    full: bool,
    databases: &[Database],
    pending: Vec<AccessProgress>,
) -> Result<AccessSummary, pgplane_core::Error> {
    let access = shared.store.access_for_pass(cluster.cluster_id, pending).await?;
    let inputs = Inputs { cluster, version_num, full, access: &access, databases };
    let groups = inputs.universe();
    if groups.is_empty() && access.pending.is_empty() {
        return Ok(AccessSummary::default());
    }
    let mut summary = AccessSummary::default();
    let result = carry_out(shared, &inputs, spec, client, &groups, &mut summary).await;
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

/// Observes, plans and applies; failures of single steps are kept in `summary` (the first
/// one) while the other steps go ahead; only a failure to observe stops it.
async fn carry_out(
    shared: &Shared,
    inputs: &Inputs<'_>,
    spec: &TargetSpec,
    client: &Client,
    groups: &BTreeSet<Group>,
    summary: &mut AccessSummary,
) -> Result<(), TargetError> {
    let cluster = inputs.cluster;
    let facts = observe_groups(client, inputs, groups).await?;
    let plan = plan(inputs, &facts);
    if let Some(blocked) = plan.blocked.first() {
        failed(summary, blocked.clone());
    }
    let claims: Vec<(&str, AccessLevel)> =
        plan.create.iter().map(|g| (g.database.as_str(), g.level)).collect();
    shared.store.record_access_groups(cluster.cluster_id, &claims, true).await.map_err(store_error)?;
    let mut global: Vec<String> = plan.create.iter().map(|g| create_group_sql(inputs, g)).collect();
    global.extend(plan.fix.iter().cloned());
    for statement in &global {
        match client.batch_execute(statement).await {
            Ok(()) => summary.changes += 1,
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    let primary = cluster.primary_user.as_str();
    let limits = shared.config.session_limits;
    let visits: Vec<_> = plan
        .visits
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
    for statement in &plan.memberships {
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
    let mut dropped = Vec::new();
    for group in droppable {
        match client.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(&group.role))).await {
            Ok(()) => {
                summary.changes += 1;
                dropped.push((group.database.as_str(), group.level));
            }
            Err(e) => failed(summary, TargetError::from(e).to_string()),
        }
    }
    shared.store.record_access_groups(cluster.cluster_id, &dropped, false).await.map_err(store_error)?;
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
            status: "online".into(),
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

    /// The facts of a target on which `plan`'s result has been carried out.
    fn converged(inputs: &Inputs<'_>) -> HashMap<String, GroupFacts> {
        let mut facts = HashMap::new();
        for grant in &inputs.access.grants {
            let group = inputs.group(&grant.database_name, grant.level());
            let entry = facts.entry(group.role).or_insert_with(|| GroupFacts {
                exists: true,
                database_exists: true,
                connect: true,
                primary_admin: true,
                members: BTreeSet::new(),
            });
            entry.members.insert(grant.user_name.clone());
        }
        facts
    }

    #[test]
    fn a_new_level_creates_its_group_and_grants_membership_by_the_primary_user_on_16() {
        let c = cluster();
        let access = AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadOnly)],
            pending: vec![pending("app")],
            groups: Vec::new(),
        };
        for (version, membership) in
            [(170000, "WITH INHERIT TRUE, SET FALSE GRANTED BY \"doadmin\""), (150000, "TO \"app\"")]
        {
            let inputs =
                Inputs { cluster: &c, version_num: version, full: false, access: &access, databases: &[] };
            let mut facts = HashMap::new();
            facts.insert(
                group_role(c.cluster_id, "shop", AccessLevel::ReadOnly),
                GroupFacts { database_exists: true, ..GroupFacts::default() },
            );
            let plan = plan(&inputs, &facts);
            assert_eq!(plan.create.len(), 1);
            assert_eq!(plan.visits["shop"].ensure.len(), 1);
            assert_eq!(plan.memberships.len(), 1);
            assert!(plan.memberships[0].ends_with(membership), "{}", plan.memberships[0]);
            assert!(plan.drift.is_empty() && plan.drop.is_empty() && plan.blocked.is_empty());
            let create = create_group_sql(&inputs, &plan.create[0]);
            assert_eq!(create.contains("WITH ADMIN TRUE"), version >= 160000, "{create}");
        }
    }

    #[test]
    fn a_revoked_membership_is_granted_again_and_reported_as_drift() {
        let c = cluster();
        let access = AccessForPass {
            grants: vec![grant("app", "shop", AccessLevel::ReadWrite)],
            pending: Vec::new(),
            groups: vec![("shop".into(), AccessLevel::ReadWrite)],
        };
        let inputs =
            Inputs { cluster: &c, version_num: 170000, full: false, access: &access, databases: &[] };
        let mut facts = converged(&inputs);
        facts.values_mut().for_each(|f| f.members.clear());
        let plan = plan(&inputs, &facts);
        assert_eq!(plan.memberships.len(), 1);
        assert_eq!(plan.drift.len(), 1);
        assert_eq!(plan.drift[0].0, ObjectKind::User);
        assert!(plan.create.is_empty() && plan.visits.is_empty());
    }

    #[test]
    fn a_level_no_one_holds_any_more_drops_its_group_in_its_database() {
        let c = cluster();
        let access = AccessForPass {
            grants: Vec::new(),
            pending: vec![pending("app")],
            groups: vec![("shop".into(), AccessLevel::ReadOnly)],
        };
        let inputs =
            Inputs { cluster: &c, version_num: 150000, full: false, access: &access, databases: &[] };
        let role = group_role(c.cluster_id, "shop", AccessLevel::ReadOnly);
        let mut facts = HashMap::new();
        let members = BTreeSet::from(["app".to_string()]);
        facts.insert(
            role,
            GroupFacts { exists: true, database_exists: true, connect: true, members, ..Default::default() },
        );
        let plan = plan(&inputs, &facts);
        assert_eq!(plan.drop.len(), 1);
        assert_eq!(plan.visits["shop"].drop.len(), 1);
        // The group goes with its memberships: no REVOKE needed.
        assert!(plan.memberships.is_empty());
    }

    #[test]
    fn read_only_statements_never_grant_writes_or_create() {
        let group = Group {
            database: "shop".into(),
            level: AccessLevel::ReadOnly,
            role: group_role(Uuid::nil(), "shop", AccessLevel::ReadOnly),
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
            let mut access = AccessForPass { grants, pending: Vec::new(), groups: Vec::new() };
            let version = if new_major { 170000 } else { 150000 };
            let inputs = Inputs { cluster: &c, version_num: version, full: false, access: &access, databases: &[] };
            let groups: Vec<(String, AccessLevel)> =
                inputs.universe().into_iter().map(|g| (g.database, g.level)).collect();
            access.groups = groups;
            let inputs = Inputs { cluster: &c, version_num: version, full: false, access: &access, databases: &[] };
            let plan = plan(&inputs, &converged(&inputs));
            prop_assert_eq!(plan, AccessPlan::default());
        }
    }
}
