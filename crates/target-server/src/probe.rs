//! The one-off exchanges the API has with a target outside a reconcile pass: the probe run at
//! registration and the listing of what the server holds. Read-only, within deadlines.

use crate::error::TargetError;
use crate::policy::TargetPolicy;
use crate::primary::{foreign_grants, GrantCounts};
use crate::spec::{
    within, SessionLimits, TargetSpec, EXCHANGE_TIMEOUT, MIN_SERVER_VERSION_NUM, ONE_OFF_WAIT,
};

/// What registration learns about a target and its admin role.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version_num: i32,
    pub version: String,
    pub is_superuser: bool,
    pub can_create_role: bool,
    pub can_create_db: bool,
    /// The server's identity ([`pgplane_core::model::server_id`]).
    pub server_id: String,
    /// How the server stores passwords it is given in plaintext (`scram-sha-256` or `md5`).
    pub password_encryption: String,
    /// The admin role may give REPLICATION: a superuser, or from PostgreSQL 16 a role that has
    /// REPLICATION itself (and CREATEROLE).
    pub can_grant_replication: bool,
    /// Sessions the server lets ordinary roles open: max_connections less the slots reserved
    /// for superusers (and, from PostgreSQL 16, for pg_use_reserved_connections).
    pub connection_slots: i32,
}

impl ServerFacts {
    /// Why this server or admin role cannot be managed, if it cannot.
    pub fn unsuitability(&self, admin_user: &str) -> Option<String> {
        if self.version_num < MIN_SERVER_VERSION_NUM {
            return Some(format!(
                "the target runs PostgreSQL {}; pgplane needs PostgreSQL 13 or later",
                self.version
            ));
        }
        if !(self.is_superuser || (self.can_create_role && self.can_create_db)) {
            return Some(format!(
                "the admin role {admin_user:?} needs SUPERUSER, or both CREATEROLE and CREATEDB"
            ));
        }
        None
    }

    /// What works differently on this server, said at registration: passwords set by hand
    /// stored as MD5, and what an admin role that is not a superuser cannot do.
    pub fn notices(&self, admin_user: &str) -> Vec<String> {
        let mut notices = Vec::new();
        if self.password_encryption != "scram-sha-256" {
            notices.push(format!(
                "the server's password_encryption is {:?}: passwords set on it by hand are stored that way \
                 (pgplane's own are always SCRAM verifiers, and a managed user's password found stored \
                 otherwise is drift, replaced by a SCRAM verifier); set password_encryption = 'scram-sha-256'",
                self.password_encryption
            ));
        }
        if !self.is_superuser {
            notices.push(format!(
                "the admin role {admin_user:?} is not a superuser: it cannot turn statement logging off for its \
                 own sessions, so the server's superuser should run ALTER ROLE {admin_user} SET log_statement = \
                 'none' (and the other settings README lists) to keep password verifiers out of the server log"
            ));
        }
        if !self.can_grant_replication {
            notices.push(format!(
                "the admin role {admin_user:?} cannot give REPLICATION (a superuser can, or from PostgreSQL 16 \
                 a role that has it): pg_allow_replication is refused"
            ));
        }
        notices
    }

    /// The major version as DigitalOcean shows it ("15", "17").
    pub fn major(version_num: i32) -> String {
        (version_num / 10000).to_string()
    }
}

/// What identifies the server a session is on (see [`pgplane_core::model::server_id`]).
pub const SERVER_ID_SQL: &str =
    "(SELECT system_identifier FROM pg_catalog.pg_control_system()), current_setting('port')::int4";

/// Connects to a target with its admin credentials (checked against `policy` first) and reads
/// what registration checks, within a deadline.
pub async fn probe(spec: &TargetSpec, policy: &TargetPolicy) -> Result<ServerFacts, TargetError> {
    let (_, client) = admin_session(spec, policy).await?;
    within(EXCHANGE_TIMEOUT, server_facts(&client)).await
}

/// `spec` with its address checked against `policy`, and a one-off session to its admin
/// database (closed when dropped).
pub(crate) async fn admin_session(
    spec: &TargetSpec,
    policy: &TargetPolicy,
) -> Result<(TargetSpec, tokio_postgres::Client), TargetError> {
    let spec = spec.clone().checked(policy).await?;
    let client = spec.connect_first(spec.admin_database(), SessionLimits::default(), ONE_OFF_WAIT).await?;
    Ok((spec, client))
}

/// What registration checks, read on `client`.
async fn server_facts(client: &tokio_postgres::Client) -> Result<ServerFacts, TargetError> {
    let sql = format!(
        "SELECT current_setting('server_version_num')::int4, current_setting('server_version'),
                rolsuper, rolcreaterole, rolcreatedb, {SERVER_ID_SQL},
                current_setting('password_encryption'),
                rolsuper OR (rolreplication AND rolcreaterole
                             AND current_setting('server_version_num')::int4 >= 160000),
                current_setting('max_connections')::int4
                  - current_setting('superuser_reserved_connections')::int4
                  - coalesce(current_setting('reserved_connections', true)::int4, 0)
           FROM pg_catalog.pg_roles WHERE rolname = current_user"
    );
    let row = client.query_one(&sql, &[]).await?;
    Ok(ServerFacts {
        version_num: row.get(0),
        version: row.get(1),
        is_superuser: row.get(2),
        can_create_role: row.get(3),
        can_create_db: row.get(4),
        server_id: pgplane_core::model::server_id(row.get(5), row.get(6)),
        password_encryption: row.get(7),
        can_grant_replication: row.get(8),
        connection_slots: row.get(9),
    })
}

/// What a registration dry run learns about a target: the probe's facts, and what is already
/// there under the names the cluster would use, and besides.
#[derive(Debug, Clone)]
pub struct Survey {
    pub facts: ServerFacts,
    /// The attributes (`SUPERUSER`, `CREATEDB`, `CREATEROLE`, `LOGIN`, `REPLICATION`,
    /// `BYPASSRLS`) the would-be primary user has, if a role of that name exists.
    pub primary_user: Option<Vec<String>>,
    /// The would-be primary user's memberships that registration would remove
    /// ([`crate::primary`]), by kind.
    pub primary_user_foreign: GrantCounts,
    /// The owner of the would-be default database, if a database of that name exists.
    pub default_database_owner: Option<String>,
    /// Every role (but PostgreSQL's own `pg_*` roles) and non-template database there.
    pub roles: Vec<ServerObject>,
    pub databases: Vec<ServerObject>,
}

/// Surveys a target for a registration dry run, read-only, in one session within a deadline
/// (its address checked against `policy` first).
pub async fn survey(
    spec: &TargetSpec,
    policy: &TargetPolicy,
    primary_user: &str,
    default_database: &str,
) -> Result<Survey, TargetError> {
    let (_, client) = admin_session(spec, policy).await?;
    within(EXCHANGE_TIMEOUT, async {
        let facts = server_facts(&client).await?;
        let attrs = client
            .query_opt(
                "SELECT array_remove(ARRAY[
                        CASE WHEN rolsuper THEN 'SUPERUSER' END, CASE WHEN rolcreatedb THEN 'CREATEDB' END,
                        CASE WHEN rolcreaterole THEN 'CREATEROLE' END, CASE WHEN rolcanlogin THEN 'LOGIN' END,
                        CASE WHEN rolreplication THEN 'REPLICATION' END,
                        CASE WHEN rolbypassrls THEN 'BYPASSRLS' END], NULL)
                   FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&primary_user],
            )
            .await?;
        let owner = client
            .query_opt(
                "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = $1",
                &[&default_database],
            )
            .await?;
        let foreign = foreign_grants(&client, primary_user, &spec.admin.user, facts.version_num).await?;
        let (roles, databases) = names(&client).await?;
        Ok(Survey {
            facts,
            primary_user: attrs.map(|r| r.get(0)),
            primary_user_foreign: GrantCounts::of(&foreign),
            default_database_owner: owner.map(|r| r.get(0)),
            roles,
            databases,
        })
    })
    .await
}

/// Every role (but `pg_*`) and every non-template database, by name.
async fn names(
    client: &tokio_postgres::Client,
) -> Result<(Vec<ServerObject>, Vec<ServerObject>), TargetError> {
    let objects = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| ServerObject { name: r.get(0), held_by: r.get(1) }).collect()
    };
    let roles = client
        .query(
            "SELECT r.rolname::text,
                    coalesce(array_agg(h.rolname::text) FILTER (WHERE h.rolname IS NOT NULL), '{}')
               FROM pg_catalog.pg_roles r
               LEFT JOIN pg_catalog.pg_auth_members m ON m.roleid = r.oid AND m.admin_option
               LEFT JOIN pg_catalog.pg_roles h ON h.oid = m.member
              WHERE r.rolname !~ '^pg_'
              GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?;
    let databases = client
        .query(
            "SELECT datname::text, ARRAY[pg_catalog.pg_get_userbyid(datdba)::text]
               FROM pg_catalog.pg_database WHERE NOT datistemplate ORDER BY 1",
            &[],
        )
        .await?;
    Ok((objects(roles), objects(databases)))
}

/// A role or a database on a target, with the roles that hold power over it (a role's ADMIN
/// OPTION holders, among them its creator on PostgreSQL 16+; a database's owner). On a shared
/// server another tenant's object is recognised by who holds it, not only by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerObject {
    pub name: String,
    pub held_by: Vec<String>,
}

impl ServerObject {
    /// Whether this object is named in `others`, or held by one of `other_holders` (roles
    /// that other clusters on the server manage): then it is theirs, never shown to this one.
    pub fn is_theirs(&self, others: &[String], other_holders: &[String]) -> bool {
        others.contains(&self.name) || self.held_by.iter().any(|h| other_holders.contains(h))
    }
}

/// Every role (but PostgreSQL's own `pg_*` roles) and every non-template database on a target,
/// for listing what pgplane does not manage, with the server's identity (so that the caller can
/// tell whether the target is still the registered server). Read-only, within a deadline.
pub async fn list_roles_and_databases(
    spec: &TargetSpec,
    policy: &TargetPolicy,
) -> Result<(String, Vec<ServerObject>, Vec<ServerObject>), TargetError> {
    let (_, client) = admin_session(spec, policy).await?;
    within(EXCHANGE_TIMEOUT, async {
        let id = client.query_one(&format!("SELECT {SERVER_ID_SQL}"), &[]).await?;
        let (roles, databases) = names(&client).await?;
        Ok((pgplane_core::model::server_id(id.get(0), id.get(1)), roles, databases))
    })
    .await
}
