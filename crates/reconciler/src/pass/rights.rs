//! Database rights on a shared server: where another cluster is registered on the same server,
//! a cluster's databases (those pgplane created or adopted) are closed to PUBLIC (no CONNECT,
//! no TEMPORARY), so that no other team's login can connect to them, and opened to the
//! cluster's own users (the primary user owns them): CONNECT and TEMPORARY each, as PUBLIC gave
//! them before. A database is closed as soon as it is created, before its creation is
//! recorded (`steps::apply_databases`, the `closing` the plan gives it); the others in the
//! plan's `database_rights` phase on every pass that reaches the target. PUBLIC's rights
//! granted back by hand on a database pgplane closed are drift, revoked again. A server that
//! stops being shared keeps its databases as they are.

use deadpool_postgres::ClientWrapper;
use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::Cluster;
use pgplane_core::store::Mark;
use pgplane_core::Store;
use pgplane_target_server::plan::Phase;
use pgplane_target_server::TargetError;
use tokio_postgres::Client;

use super::drift::report_drift;
use super::outcomes::Ledger;
use crate::controller::Shared;
use crate::observe::rights::{observe_rights, DatabaseRights};
use crate::observe::Observed;
use crate::plan::pass::{Action, PassPlan};

/// When the cluster's server is shared: its users on the target, and its databases' rights as
/// found (what [`Seen::rights`](crate::plan::pass::Seen) holds). None otherwise. `known`: whether
/// the server the cluster is registered on is shared, read with the cluster; it answers only
/// when that is the server observed, the store is asked otherwise.
pub(crate) async fn observe_shared(
    store: &Store,
    client: &ClientWrapper,
    cluster: &Cluster,
    observed: &Observed,
    known: Option<bool>,
) -> Result<Option<(Vec<String>, Vec<DatabaseRights>)>, TargetError> {
    let shared = match known {
        Some(shared) if cluster.server_id.as_deref() == Some(observed.server_id.as_str()) => shared,
        _ => store.shares_server(cluster.cluster_id, &observed.server_id).await?,
    };
    if !shared {
        return Ok(None);
    }
    let rights = store.shared_rights(cluster.cluster_id).await?;
    Ok(Some(observe_rights(client, &rights).await?))
}

/// Runs the plan's `database_rights` phase, recording the drift each statement repairs and
/// which databases are now closed.
pub(super) async fn apply(
    shared: &Shared,
    cluster: &Cluster,
    client: &Client,
    plan: &PassPlan,
    ledger: &mut Ledger<'_>,
) -> Result<(), pgplane_core::Error> {
    let mut closed = Vec::new();
    for op in plan.operations(Phase::DatabaseRights) {
        let Action::Rights { database, sql } = &op.action else { continue };
        let outcome = match client.batch_execute(sql).await {
            Ok(()) => {
                ledger.changes += 1;
                closed.push(database.as_str());
                Outcome::Applied
            }
            Err(e) => {
                let message = format!("database {database:?}: {}", TargetError::from(e));
                ledger.first_error.get_or_insert(message.clone());
                Outcome::Failed(message)
            }
        };
        if let Some(found) = &op.step.drift {
            report_drift(shared, cluster, ObjectKind::Database, database, found, &outcome).await?;
        }
    }
    if !closed.is_empty() {
        shared.store.mark(cluster.cluster_id, Mark::ClosedToPublic, &closed).await?;
    }
    Ok(())
}
