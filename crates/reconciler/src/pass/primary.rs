//! The primary user's memberships in a pass: whatever pgplane did not give it
//! (`pgplane_target_server::primary`) is read with the observation whenever the pass has the
//! primary user and it is on the target (every full pass, and the first pass after a
//! registration or a move, which adopts it), planned as the `primary_user` phase and revoked.
//! After the adoption, finding any is drift, recorded by counts (the roles involved may be
//! another team's, so no names).

use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::Cluster;
use pgplane_target_server::plan::Phase;
use pgplane_target_server::primary::{revoke_sql, ForeignGrant, GrantCounts, Side};
use pgplane_target_server::TargetError;
use tokio_postgres::Client;

use super::drift::report_drift;
use super::outcomes::Ledger;
use crate::controller::Shared;
use crate::observe::Observed;
use crate::plan::pass::{Action, PassPlan};

/// The primary user's foreign memberships, as the observation found them (when the pass has
/// the primary user and it is on the target already: a role pgplane is about to create has
/// none). The membership of its own second login (`alternate`, a rotation's, which acts as it)
/// is pgplane's, not foreign.
pub(crate) fn foreign_of(observed: &Observed, alternate: Option<&str>) -> Vec<ForeignGrant> {
    let pgplanes =
        |g: &ForeignGrant| g.side == Side::Holder && !g.admin_option && Some(g.role.as_str()) == alternate;
    observed.primary_foreign.iter().filter(|g| !pgplanes(g)).cloned().collect()
}

/// Runs the plan's `primary_user` phase: each foreign membership revoked on its own (one that
/// cannot be does not keep the others), the drift it repairs recorded.
pub(super) async fn revoke_foreign(
    shared: &Shared,
    cluster: &Cluster,
    client: &Client,
    version_num: i32,
    plan: &PassPlan,
    ledger: &mut Ledger<'_>,
) -> Result<(), pgplane_core::Error> {
    let primary = cluster.primary_user.as_str();
    for op in plan.operations(Phase::PrimaryUser) {
        let Action::RevokeForeign(grants) = &op.action else { continue };
        let mut failed = None;
        for grant in grants {
            if let Err(e) = client.batch_execute(&revoke_sql(grant, primary, version_num)).await {
                failed.get_or_insert(TargetError::from(e));
            }
        }
        let counts = GrantCounts::of(grants);
        if let Some(e) = &failed {
            let message = format!(
                "the primary user's foreign memberships ({}) could not all be removed: {e}",
                counts.describe()
            );
            tracing::warn!(cluster.id = %cluster.cluster_id, "{message}");
            ledger.first_error.get_or_insert(message);
        }
        if let Some(found) = &op.step.drift {
            let outcome = if failed.is_none() { Outcome::Applied } else { Outcome::Failed(String::new()) };
            report_drift(shared, cluster, ObjectKind::User, primary, found, &outcome).await?;
        }
        tracing::info!(cluster.id = %cluster.cluster_id, removed = %counts.describe(), "primary user's foreign memberships");
    }
    Ok(())
}
