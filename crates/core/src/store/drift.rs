//! Drift events: what the reconciler found changed behind its back, and when it repaired it.

use uuid::Uuid;

use super::Store;
use crate::error::Result;
use crate::lifecycle::ObjectKind;
use crate::model::DriftEvent;

impl Store {
    /// Records drift found on an object; `repaired` when the same pass put it back.
    pub async fn record_drift(
        &self,
        cluster_id: Uuid,
        kind: ObjectKind,
        name: &str,
        description: &str,
        repaired: bool,
    ) -> Result<()> {
        self.insert_drift(cluster_id, kind.noun(), name, description, repaired).await
    }

    /// Records drift a pooler found on a pool (and repaired, when `repaired`).
    pub async fn record_pool_drift(
        &self,
        cluster_id: Uuid,
        pool: &str,
        description: &str,
        repaired: bool,
    ) -> Result<()> {
        self.insert_drift(cluster_id, "pool", pool, description, repaired).await
    }

    async fn insert_drift(
        &self,
        cluster_id: Uuid,
        kind: &str,
        name: &str,
        description: &str,
        repaired: bool,
    ) -> Result<()> {
        sqlx::query!(
            "insert into drift_events (cluster_id, kind, name, description, repaired_at)
             values ($1, $2, $3, $4, case when $5 then now() end)",
            cluster_id,
            kind,
            name,
            description,
            repaired
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A cluster's drift events, newest first.
    pub async fn list_drift(&self, cluster_id: Uuid, limit: i64) -> Result<Vec<DriftEvent>> {
        Ok(sqlx::query_as!(
            DriftEvent,
            "select event_id, cluster_id, kind, name, description, found_at, repaired_at
               from drift_events where cluster_id = $1 order by event_id desc limit $2",
            cluster_id,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
