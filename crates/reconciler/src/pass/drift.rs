//! Reporting drift (found by `plan::drift` and the access plan): logged, counted and recorded
//! with whether the pass repaired it.

use pgplane_core::lifecycle::{ObjectKind, Outcome};
use pgplane_core::model::Cluster;

use crate::controller::Shared;

/// Logs and records drift, and whether this pass repaired it.
pub(crate) async fn report_drift(
    shared: &Shared,
    cluster: &Cluster,
    kind: ObjectKind,
    name: &str,
    found: &str,
    outcome: &Outcome,
) -> Result<(), pgplane_core::Error> {
    let repaired = *outcome == Outcome::Applied;
    crate::metrics::drift(kind.noun(), repaired);
    tracing::warn!(cluster.id = %cluster.cluster_id, kind = kind.noun(), name, drift = found, repaired, "drift found");
    shared.store.record_drift(cluster.cluster_id, kind, name, found, repaired).await
}
