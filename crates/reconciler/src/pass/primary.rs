//! The primary user's memberships in a pass: whatever pgplane did not give it
//! (`pgplane_target_server::primary`) is revoked whenever the pass looks at the primary user (every
//! full pass, and the first pass after a registration or a move, which adopts it). After the
//! adoption, finding any is drift, recorded by counts (the roles involved may be another
//! team's, so no names).

use pgplane_core::lifecycle::{Lifecycle, ObjectKind, Outcome};
use pgplane_core::model::Cluster;
use pgplane_target_server::primary::{foreign_grants, revoke_sql, GrantCounts};
use pgplane_target_server::TargetError;
use tokio_postgres::Client;

use super::drift::report_drift;
use super::outcomes::Ledger;
use super::RoleItem;
use crate::controller::Shared;
use crate::plan::Step;

/// Revokes the primary user's foreign memberships, if the pass has the primary user and it was
/// on the target already (a role pgplane just created has none).
pub(super) async fn clean_primary_user(
    shared: &Shared,
    cluster: &Cluster,
    client: &Client,
    version_num: i32,
    planned: &[(&RoleItem, Step)],
    ledger: &mut Ledger<'_>,
) -> Result<(), pgplane_core::Error> {
    let Some((item, _)) =
        planned.iter().find(|(r, step)| r.desired.primary && !matches!(step, Step::CreateRole { .. }))
    else {
        return Ok(());
    };
    let primary = cluster.primary_user.as_str();
    let result = async {
        let grants = foreign_grants(client, primary, &cluster.admin_user, version_num).await?;
        let mut failed = None;
        for grant in &grants {
            if let Err(e) = client.batch_execute(&revoke_sql(grant, primary, version_num)).await {
                failed.get_or_insert(TargetError::from(e));
            }
        }
        Ok::<_, TargetError>((GrantCounts::of(&grants), failed))
    }
    .await;
    let (counts, failed) = match result {
        Ok(found) => found,
        Err(e) => (GrantCounts::default(), Some(e)),
    };
    if let Some(e) = &failed {
        let message = format!(
            "the primary user's foreign memberships ({}) could not all be removed: {e}",
            counts.describe()
        );
        tracing::warn!(cluster.id = %cluster.cluster_id, "{message}");
        ledger.first_error.get_or_insert(message);
    }
    if !counts.is_empty() && item.user.watched_for_drift() {
        let found = format!("{} that pgplane did not grant", counts.describe());
        let outcome = if failed.is_none() { Outcome::Applied } else { Outcome::Failed(String::new()) };
        report_drift(shared, cluster, ObjectKind::User, primary, &found, &outcome).await?;
    }
    if !counts.is_empty() {
        tracing::info!(cluster.id = %cluster.cluster_id, removed = %counts.describe(), "primary user's foreign memberships");
    }
    Ok(())
}
