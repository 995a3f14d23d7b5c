//! Reading the rights on a shared server's databases that keep other teams out (see
//! `pass::rights`): whether PUBLIC holds CONNECT or TEMPORARY on each of the cluster's
//! databases, and which of the cluster's users lack either.

use deadpool_postgres::ClientWrapper;
use pgplane_core::store::SharedRights;
use pgplane_target_server::TargetError;

use super::query;

/// One of the cluster's databases on a shared server, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseRights {
    pub database: String,
    /// PUBLIC holds CONNECT or TEMPORARY on it (no ACL is the default one, where it does).
    pub public: bool,
    /// The cluster's users on the target that lack either as a direct grant (the owner needs
    /// none).
    pub missing: Vec<String>,
    /// pgplane had closed it to PUBLIC before: PUBLIC's rights there now are drift.
    pub closed_before: bool,
}

/// The cluster's users (of `rights.users`) that are on the target, and the rights on its
/// databases (`rights.databases`).
pub(crate) async fn observe_rights(
    client: &ClientWrapper,
    rights: &SharedRights,
) -> Result<(Vec<String>, Vec<DatabaseRights>), TargetError> {
    let present = query(
        client,
        "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1) ORDER BY 1",
        &[&rights.users],
    )
    .await?;
    let present = present.into_iter().map(|row| row.get(0)).collect();
    if rights.databases.is_empty() {
        return Ok((present, Vec::new()));
    }
    let databases: Vec<&str> = rights.databases.iter().map(|(d, _)| d.as_str()).collect();
    let rows = query(
        client,
        "SELECT d.datname::text,
                    EXISTS (SELECT 1 FROM pg_catalog.aclexplode(a.acl) e
                             WHERE e.grantee = 0 AND e.privilege_type IN ('CONNECT', 'TEMPORARY')),
                    ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
                           WHERE r.rolname = ANY($2) AND r.oid <> d.datdba
                          EXCEPT
                          SELECT r.rolname::text
                            FROM pg_catalog.aclexplode(a.acl) e
                            JOIN pg_catalog.pg_roles r ON r.oid = e.grantee
                           WHERE e.privilege_type IN ('CONNECT', 'TEMPORARY')
                           GROUP BY r.rolname HAVING count(DISTINCT e.privilege_type) = 2
                          ORDER BY 1)
               FROM pg_catalog.pg_database d
              CROSS JOIN LATERAL (SELECT coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba)) AS acl) a
              WHERE d.datname = ANY($1)
              ORDER BY 1",
        &[&databases, &rights.users],
    )
    .await?;
    let found = rows
        .into_iter()
        .map(|row| {
            let database: String = row.get(0);
            let closed_before = rights.databases.iter().any(|(d, closed)| *d == database && *closed);
            DatabaseRights { database, public: row.get(1), missing: row.get(2), closed_before }
        })
        .collect();
    Ok((present, found))
}
