//! The one-off exchanges the API has with a target outside a reconcile pass: the probe run at
//! registration and the listing of what the server holds. Read-only, within deadlines.

use crate::error::TargetError;
use crate::policy::TargetPolicy;
use crate::spec::{within, SessionLimits, TargetSpec, EXCHANGE_TIMEOUT, MIN_SERVER_VERSION_NUM};

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
    let spec = spec.clone().checked(policy).await?;
    let client = spec.connect(spec.admin_database(), SessionLimits::default()).await?;
    let sql = format!(
        "SELECT current_setting('server_version_num')::int4, current_setting('server_version'),
                rolsuper, rolcreaterole, rolcreatedb, {SERVER_ID_SQL}
           FROM pg_catalog.pg_roles WHERE rolname = current_user"
    );
    let row = within(EXCHANGE_TIMEOUT, async { Ok(client.query_one(&sql, &[]).await?) }).await?;
    let facts = ServerFacts {
        version_num: row.get(0),
        version: row.get(1),
        is_superuser: row.get(2),
        can_create_role: row.get(3),
        can_create_db: row.get(4),
        server_id: pgplane_core::model::server_id(row.get(5), row.get(6)),
    };
    Ok(facts)
}

/// Every role (but PostgreSQL's own `pg_*` roles) and every non-template database on a target,
/// for listing what pgplane does not manage, with the server's identity (so that the caller can
/// tell whether the target is still the registered server). Read-only, within a deadline.
pub async fn list_roles_and_databases(
    spec: &TargetSpec,
    policy: &TargetPolicy,
) -> Result<(String, Vec<String>, Vec<String>), TargetError> {
    let spec = spec.clone().checked(policy).await?;
    let client = spec.connect(spec.admin_database(), SessionLimits::default()).await?;
    within(EXCHANGE_TIMEOUT, async {
        let names = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get(0)).collect();
        let id = client.query_one(&format!("SELECT {SERVER_ID_SQL}"), &[]).await?;
        let roles = client
            .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' ORDER BY 1", &[])
            .await?;
        let databases = client
            .query("SELECT datname::text FROM pg_catalog.pg_database WHERE NOT datistemplate ORDER BY 1", &[])
            .await?;
        Ok((pgplane_core::model::server_id(id.get(0), id.get(1)), names(roles), names(databases)))
    })
    .await
}
