//! What depends on a role across a target, read live before it is deleted (`GET
//! …/users/{name}/dependencies`): per database, what it owns and the privileges it holds (from
//! `pg_shdepend`, named with `pg_identify_object`, grouped by kind with counts and the first
//! few names), the default privileges it set, and server-wide what it owns (databases,
//! tablespaces), its privileges there and its memberships. Read-only: one session to the admin
//! database and one to each database `pg_shdepend` names, each opened within the connect
//! deadline, queried within [`EXCHANGE_TIMEOUT`] and closed at once.

use serde::Serialize;
use tokio_postgres::Client;
use utoipa::ToSchema;

use crate::error::TargetError;
use crate::policy::TargetPolicy;
use crate::probe::{admin_session, SERVER_ID_SQL};
use crate::spec::{within, SessionLimits, TargetSpec, EXCHANGE_TIMEOUT};

/// How many names each group shows (the count is always complete).
pub const FIRST_NAMES: i32 = 5;
/// How many databases a report visits; beyond them it says `truncated`.
pub const MAX_DATABASES: usize = 50;
/// How many default-privilege entries and memberships a report lists.
const MAX_ENTRIES: i64 = 50;

/// SQLSTATE invalid_catalog_name: the database was dropped since it was listed.
const INVALID_CATALOG_NAME: &str = "3D000";

/// Objects of one kind: how many, and the first few by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ObjectGroup {
    /// PostgreSQL's word for the kind (`pg_identify_object`): `schema`, `table`, `view`,
    /// `materialized view`, `sequence`, `function`, `procedure`, `type`, `domain`, `database`,
    /// `table column`, ...
    pub kind: String,
    pub count: i64,
    /// The first names (schema-qualified where that applies), at most [`FIRST_NAMES`].
    pub first: Vec<String>,
}

/// Default privileges the role set (`ALTER DEFAULT PRIVILEGES`): what objects it creates later
/// will grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DefaultPrivileges {
    /// The schema they are limited to (absent: every schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// `tables`, `sequences`, `functions`, `types` or `schemas`.
    pub object_type: String,
    /// The ACL entries, as PostgreSQL prints them (`grantee=privileges/grantor`).
    pub acl: Vec<String>,
}

/// What depends on the role in one database (or, for `shared`, server-wide).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Dependents {
    /// What the role owns, by kind.
    pub owned: Vec<ObjectGroup>,
    /// Objects on which the role holds privileges (or is named by a row-security policy), by
    /// kind.
    pub privileges: Vec<ObjectGroup>,
}

/// What depends on the role in one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DatabaseDependents {
    pub database: String,
    #[serde(flatten)]
    pub dependents: Dependents,
    pub default_privileges: Vec<DefaultPrivileges>,
    /// SECURITY DEFINER functions and procedures the role owns here (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_definer: Option<SecurityDefiners>,
    /// Why the database could not be read (its dependents are then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// SECURITY DEFINER routines a role owns in one database, and what its deletion does to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SecurityDefiners {
    pub count: i64,
    /// The first signatures (as `regprocedure` prints them), at most [`FIRST_NAMES`].
    pub first: Vec<String>,
    /// What deleting the role does to them.
    pub on_delete: &'static str,
}

/// What [`SecurityDefiners::on_delete`] says.
pub const DISARMED_ON_DELETE: &str = "made SECURITY INVOKER before they are handed to the heir: \
     from then on they run with their callers' rights, never with the heir's";

/// A role membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Membership {
    pub role: String,
    pub admin_option: bool,
}

/// Everything that depends on a role on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RoleDependencies {
    /// Whether the role exists on the target (a user not created yet, or dropped behind
    /// pgplane's back, has no dependents).
    pub exists: bool,
    /// Whether deleting it would hand anything to an heir: it owns objects or set default
    /// privileges somewhere (or a database could not be read).
    pub owns_objects: bool,
    /// Server-wide objects (databases, tablespaces) it owns or holds privileges on.
    pub server: Dependents,
    /// Per database where it owns something or holds a privilege, by name.
    pub databases: Vec<DatabaseDependents>,
    /// Roles it is a member of.
    pub member_of: Vec<Membership>,
    /// Roles that are members of it.
    pub members: Vec<Membership>,
    /// More databases depend on it than a report visits ([`MAX_DATABASES`]).
    pub truncated: bool,
    /// The server's identity, so that the caller can tell it is the registered one.
    #[serde(skip)]
    pub server_id: String,
    /// Memberships (either way) in roles that are not the cluster's, counted but not named
    /// (see [`RoleDependencies::keep_names_of`]).
    pub other_roles: usize,
    /// Databases that are not the cluster's where the role owns or holds something, counted
    /// but not named.
    pub other_databases: usize,
}

impl RoleDependencies {
    fn compute_owns(&mut self) {
        self.owns_objects = !self.server.owned.is_empty()
            || self.databases.iter().any(|d| {
                !d.dependents.owned.is_empty() || !d.default_privileges.is_empty() || d.error.is_some()
            });
    }
}

/// Reads what depends on `role` on the target (its address checked against `policy` first).
pub async fn role_dependencies(
    spec: &TargetSpec,
    policy: &TargetPolicy,
    role: &str,
) -> Result<RoleDependencies, TargetError> {
    let (spec, admin) = admin_session(spec, policy).await?;
    let (mut report, oid, databases) = within(EXCHANGE_TIMEOUT, async {
        let id = admin.query_one(&format!("SELECT {SERVER_ID_SQL}"), &[]).await?;
        let server_id = pgplane_core::model::server_id(id.get(0), id.get(1));
        let mut report = RoleDependencies {
            exists: false,
            owns_objects: false,
            server: Dependents::default(),
            databases: Vec::new(),
            member_of: Vec::new(),
            members: Vec::new(),
            truncated: false,
            server_id,
            other_roles: 0,
            other_databases: 0,
        };
        let Some(row) =
            admin.query_opt("SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role]).await?
        else {
            return Ok((report, 0, Vec::new()));
        };
        let oid: u32 = row.get(0);
        report.exists = true;
        report.server = dependents(&admin, oid, true).await?;
        let memberships = |sql: &'static str| {
            let admin = &admin;
            async move {
                let rows = admin.query(sql, &[&oid, &MAX_ENTRIES]).await?;
                Ok::<_, tokio_postgres::Error>(
                    rows.iter().map(|r| Membership { role: r.get(0), admin_option: r.get(1) }).collect(),
                )
            }
        };
        report.member_of = memberships(
            "SELECT r.rolname::text, bool_or(m.admin_option) FROM pg_catalog.pg_auth_members m
               JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
              WHERE m.member = $1 GROUP BY 1 ORDER BY 1 LIMIT $2",
        )
        .await?;
        report.members = memberships(
            "SELECT r.rolname::text, bool_or(m.admin_option) FROM pg_catalog.pg_auth_members m
               JOIN pg_catalog.pg_roles r ON r.oid = m.member
              WHERE m.roleid = $1 GROUP BY 1 ORDER BY 1 LIMIT $2",
        )
        .await?;
        // The databases where something depends on the role (shared objects are the server's).
        let rows = admin
            .query(
                "SELECT d.datname::text FROM pg_catalog.pg_shdepend s
                   JOIN pg_catalog.pg_database d ON d.oid = s.dbid
                  WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                    AND s.refobjid = $1 AND d.datallowconn
                  GROUP BY 1 ORDER BY 1",
                &[&oid],
            )
            .await?;
        let databases: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok((report, oid, databases))
    })
    .await?;
    report.truncated = databases.len() > MAX_DATABASES;
    for database in databases.into_iter().take(MAX_DATABASES) {
        let read = if database == spec.admin_database() {
            database_dependents(&admin, oid).await
        } else {
            match spec.connect(&database, SessionLimits::default()).await {
                // The session closes when `client` is dropped, at the end of this arm.
                Ok(client) => database_dependents(&client, oid).await,
                Err(e) => Err(e),
            }
        };
        let entry = match read {
            Ok((dependents, default_privileges, security_definer)) => {
                DatabaseDependents { database, dependents, default_privileges, security_definer, error: None }
            }
            Err(e) if e.sqlstate() == Some(INVALID_CATALOG_NAME) => continue,
            Err(e) => DatabaseDependents {
                database,
                dependents: Dependents::default(),
                default_privileges: Vec::new(),
                security_definer: None,
                error: Some(e.to_string()),
            },
        };
        report.databases.push(entry);
    }
    report.compute_owns();
    Ok(report)
}

/// The role's dependents in the session's database, the default privileges it set there and
/// the SECURITY DEFINER routines it owns there.
async fn database_dependents(
    client: &Client,
    oid: u32,
) -> Result<(Dependents, Vec<DefaultPrivileges>, Option<SecurityDefiners>), TargetError> {
    within(EXCHANGE_TIMEOUT, async {
        let found = dependents(client, oid, false).await?;
        let rows = client
            .query(
                "SELECT n.nspname::text,
                        CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
                             WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas'
                             ELSE d.defaclobjtype::text END,
                        d.defaclacl::text[]
                   FROM pg_catalog.pg_default_acl d
                   LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
                  WHERE d.defaclrole = $1
                  ORDER BY 1 NULLS FIRST, 2 LIMIT $2",
                &[&oid, &MAX_ENTRIES],
            )
            .await?;
        let defaults = rows
            .iter()
            .map(|r| DefaultPrivileges { schema: r.get(0), object_type: r.get(1), acl: r.get(2) })
            .collect();
        let definers = client
            .query_one(
                "SELECT count(*), (array_agg(f.name ORDER BY f.name))[1:$2]
                   FROM pg_catalog.pg_proc p,
                        LATERAL (SELECT p.oid::pg_catalog.regprocedure::text AS name) f
                  WHERE p.proowner = $1 AND p.prosecdef",
                &[&oid, &FIRST_NAMES],
            )
            .await?;
        let count: i64 = definers.get(0);
        let definers = (count > 0).then(|| SecurityDefiners {
            count,
            first: definers.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
            on_delete: DISARMED_ON_DELETE,
        });
        Ok((found, defaults, definers))
    })
    .await
}

/// What the role owns and holds privileges on, by kind: server-wide (`shared`) or in the
/// session's database. Default privileges are listed apart (see [`DefaultPrivileges`]).
async fn dependents(client: &Client, oid: u32, shared: bool) -> Result<Dependents, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT s.deptype = 'o', o.type, count(*),
                    (array_agg(o.identity ORDER BY o.identity))[1:$2]
               FROM pg_catalog.pg_shdepend s
              CROSS JOIN LATERAL pg_catalog.pg_identify_object(s.classid, s.objid, s.objsubid) o
              WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND s.refobjid = $1
                AND s.dbid = CASE WHEN $3 THEN 0::oid ELSE
                      (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) END
                AND s.deptype IN ('o', 'a', 'r')
                AND NOT (s.deptype = 'o' AND s.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass)
              GROUP BY 1, 2 ORDER BY 1 DESC, 2",
            &[&oid, &FIRST_NAMES, &shared],
        )
        .await?;
    let mut found = Dependents::default();
    for row in rows {
        let group = ObjectGroup { kind: row.get(1), count: row.get(2), first: row.get(3) };
        if row.get::<_, bool>(0) {
            found.owned.push(group);
        } else {
            found.privileges.push(group);
        }
    }
    Ok(found)
}

impl RoleDependencies {
    /// Leaves in the report only the names of roles and databases for which `ours_role` and
    /// `ours_database` hold (the caller's cluster's): memberships in other roles and entries
    /// for other databases are counted instead, other databases' names are left out of the
    /// server-wide groups, and other grantees in default privileges read `<another role>`.
    /// Whether the role owns something is kept as it was read.
    pub fn keep_names_of(&mut self, ours_role: impl Fn(&str) -> bool, ours_database: impl Fn(&str) -> bool) {
        for list in [&mut self.member_of, &mut self.members] {
            let before = list.len();
            list.retain(|m| ours_role(&m.role));
            self.other_roles += before - list.len();
        }
        let before = self.databases.len();
        self.databases.retain(|d| ours_database(&d.database));
        self.other_databases += before - self.databases.len();
        for group in self.server.owned.iter_mut().chain(self.server.privileges.iter_mut()) {
            if group.kind == "database" {
                group.first.retain(|identity| ours_database(&unquoted(identity)));
            }
        }
        for defaults in self.databases.iter_mut().flat_map(|d| d.default_privileges.iter_mut()) {
            for entry in &mut defaults.acl {
                *entry = redacted_acl_item(entry, &ours_role);
            }
        }
    }
}

/// An identifier as `quote_ident` printed it, unquoted.
fn unquoted(identity: &str) -> String {
    match identity.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => identity.to_string(),
    }
}

/// An ACL item (`grantee=privileges/grantor`) with every role name for which `ours` does not
/// hold replaced by `<another role>` (an empty grantee, PUBLIC, stays).
fn redacted_acl_item(item: &str, ours: &impl Fn(&str) -> bool) -> String {
    let name = |raw: &str| {
        let plain = unquoted(raw);
        if raw.is_empty() || ours(&plain) {
            raw.to_string()
        } else {
            "<another role>".to_string()
        }
    };
    match item.split_once('=').and_then(|(grantee, rest)| {
        rest.rsplit_once('/').map(|(privileges, grantor)| (grantee, privileges, grantor))
    }) {
        Some((grantee, privileges, grantor)) => format!("{}={privileges}/{}", name(grantee), name(grantor)),
        None => "<redacted>".to_string(),
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn other_roles_in_acl_items_are_redacted() {
        let ours = |n: &str| n == "alice" || n == "Bob";
        assert_eq!(redacted_acl_item("alice=r/alice", &ours), "alice=r/alice");
        assert_eq!(redacted_acl_item("=r/alice", &ours), "=r/alice");
        assert_eq!(redacted_acl_item("rival=arwd/alice", &ours), "<another role>=arwd/alice");
        assert_eq!(redacted_acl_item("\"Bob\"=r/alice", &ours), "\"Bob\"=r/alice");
        assert_eq!(unquoted("\"a\"\"b\""), "a\"b");
    }
}
