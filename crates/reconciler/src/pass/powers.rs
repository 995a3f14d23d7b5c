//! Server-wide powers in a pass: REPLICATION that a user asks for is withheld (and taken away
//! if it holds it) where `pgplane_core::powers` refuses it: the operator has not allowed it,
//! or the cluster's server hosts another cluster. Never silently: the user's step then ends
//! failed, its `last_error` saying why, until its setting is turned off or the server is the
//! cluster's alone again.

use pgplane_core::model::Cluster;
use pgplane_core::powers::replication_refusal;
use pgplane_core::Store;

use super::RoleItem;

/// Withholds REPLICATION from the pass's (or the plan's) roles that ask for it, where it is
/// refused (`operator_allows`: `--allow-replication-for-sole-tenants`); the refusal stays on
/// each such role for its outcome.
pub(super) async fn withhold_replication(
    store: &Store,
    operator_allows: bool,
    cluster: &Cluster,
    roles: &mut [RoleItem],
) -> Result<(), pgplane_core::Error> {
    if !roles.iter().any(|r| r.desired.allow_replication) {
        return Ok(());
    }
    let alone = operator_allows && store.alone_on_server(cluster).await?;
    let allowed = operator_allows;
    let Some(why) = replication_refusal(allowed, alone) else { return Ok(()) };
    for role in roles.iter_mut().filter(|r| r.desired.allow_replication) {
        role.desired.allow_replication = false;
        role.desired.withheld = Some(why);
    }
    Ok(())
}
