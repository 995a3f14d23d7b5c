//! Database rights on a shared server: where another cluster is registered on the same server,
//! a cluster's databases (those pgplane created or adopted) are closed to PUBLIC (no CONNECT,
//! no TEMPORARY), so that no other team's login can connect to them, and opened to the
//! cluster's own users (the primary user owns them): CONNECT and TEMPORARY each, as PUBLIC gave
//! them before. A database is closed as soon as it is created, before its creation is
//! recorded; the others on every pass that reaches the target. PUBLIC's rights granted back by
//! hand on a database pgplane closed are drift, revoked again. A server that stops being
//! shared keeps its databases as they are.

use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::Cluster;
use pgplane_core::store::SharedRights;
use pgplane_target_server::TargetError;
use tokio_postgres::Client;

use super::drift::report_drift;
use crate::controller::Shared;
use crate::observe::Observed;
use crate::sql::rights::rights_sql;

/// The cluster's users and databases, when its server is shared; None otherwise.
pub(crate) async fn prepare(
    shared: &Shared,
    cluster: &Cluster,
    observed: &Observed,
) -> Result<Option<SharedRights>, pgplane_core::Error> {
    if !shared.store.shares_server(cluster.cluster_id, &observed.server_id).await? {
        return Ok(None);
    }
    Ok(Some(shared.store.shared_rights(cluster.cluster_id).await?))
}

/// What bringing databases in line did: statements that changed the target, the first
/// failure.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub changes: usize,
    pub error: Option<String>,
}

/// Brings the cluster's databases in line (all of them, or `only` these), reporting as drift
/// PUBLIC's rights found on a database pgplane had closed.
pub(crate) async fn reconcile(
    shared: &Shared,
    cluster: &Cluster,
    client: &Client,
    rights: &SharedRights,
    only: Option<&str>,
) -> Result<Done, pgplane_core::Error> {
    let databases: Vec<&str> = match only {
        Some(name) => vec![name],
        None => rights.databases.iter().map(|(d, _)| d.as_str()).collect(),
    };
    let mut done = Done::default();
    if databases.is_empty() {
        return Ok(done);
    }
    let found = match observe(client, &databases, &rights.users).await {
        Ok(found) => found,
        Err(e) => {
            done.error = Some(e.to_string());
            return Ok(done);
        }
    };
    let mut closed = Vec::new();
    for (database, public, missing) in &found {
        if !public && missing.is_empty() {
            continue;
        }
        let outcome = match client.batch_execute(&rights_sql(database, *public, missing)).await {
            Ok(()) => {
                done.changes += 1;
                closed.push(database.as_str());
                Outcome::Applied
            }
            Err(e) => {
                let message = format!("database {database:?}: {}", TargetError::from(e));
                done.error.get_or_insert(message.clone());
                Outcome::Failed(message)
            }
        };
        let was_closed = rights.databases.iter().any(|(d, c)| d == database && *c);
        if *public && was_closed {
            let found = "PUBLIC's CONNECT or TEMPORARY on it was granted back (the server is shared)";
            report_drift(shared, cluster, ObjectKind::Database, database, found, &outcome).await?;
        }
    }
    shared.store.record_closed_to_public(cluster.cluster_id, &closed).await?;
    Ok(done)
}

/// Per database: whether PUBLIC holds CONNECT or TEMPORARY on it (no ACL is the default one, where
/// it does), and
/// which of `users` lack either as a direct grant (the owner needs none).
async fn observe(
    client: &Client,
    databases: &[&str],
    users: &[String],
) -> Result<Vec<(String, bool, Vec<String>)>, TargetError> {
    let rows = client
        .query(
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
                           GROUP BY r.rolname HAVING count(DISTINCT e.privilege_type) = 2)
               FROM pg_catalog.pg_database d
              CROSS JOIN LATERAL (SELECT coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba)) AS acl) a
              WHERE d.datname = ANY($1)
              ORDER BY 1",
            &[&databases, &users],
        )
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}
