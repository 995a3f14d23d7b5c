//! What the reconciler reads and writes in the metadata store: which clusters are due, which
//! objects it has claimed on a target, the outcome of each object, and the end of each pass
//! (announced on the reconciled channel so that waiting API requests answer at once).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ObjectKind, Store, RECONCILED_CHANNEL};
use crate::error::Result;

/// What happened to one object in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target now matches the object's desired state at the generation that was read.
    Applied,
    /// Applying failed; the pass will be retried with backoff. The message holds no secret.
    Failed(String),
    /// A same-named object that pgplane does not manage exists on the target: left alone.
    Conflict(String),
    /// The object was dropped from the target (or never existed) and its row can go.
    Dropped,
}

impl Store {
    /// Clusters that need a pass now: their desired state changed since the last converged pass,
    /// or their last pass is older than `resync` (drift detection); never before their backoff
    /// time.
    pub async fn due_clusters(&self, resync: Duration, limit: i64) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "select cluster_id from clusters
              where next_attempt_at <= now()
                and (generation > reconciled_generation
                     or last_reconciled_at is null
                     or last_reconciled_at < now() - make_interval(secs => $1))
              order by next_attempt_at
              limit $2",
        )
        .bind(resync.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records, before CREATE is issued, that pgplane is about to create this object, so that a
    /// crash between the CREATE and its outcome does not make pgplane disown it.
    pub async fn claim(&self, kind: ObjectKind, cluster_id: Uuid, name: &str) -> Result<()> {
        let sql = format!("update {} set claimed = true where cluster_id = $1 and name = $2", kind.table());
        sqlx::query(&sql).bind(cluster_id).bind(name).execute(&self.pool).await?;
        Ok(())
    }

    /// Records the outcome of one object, applied at `generation`.
    pub async fn record_outcome(
        &self,
        kind: ObjectKind,
        cluster_id: Uuid,
        name: &str,
        generation: i64,
        outcome: &Outcome,
    ) -> Result<()> {
        let table = kind.table();
        let (sql, message) = match outcome {
            Outcome::Applied => (
                format!(
                    "update {table}
                        set applied_generation = greatest(applied_generation, $3), last_error = null,
                            sync_status = case when generation = $3 then 'ready' else 'pending' end,
                            updated_at = now()
                      where cluster_id = $1 and name = $2"
                ),
                None,
            ),
            Outcome::Failed(m) => (
                format!(
                    "update {table} set last_error = $4, updated_at = now()
                      where cluster_id = $1 and name = $2 and applied_generation < $3"
                ),
                Some(m),
            ),
            Outcome::Conflict(m) => (
                format!(
                    "update {table}
                        set sync_status = 'conflict', claimed = false, last_error = $4,
                            applied_generation = greatest(applied_generation, $3), updated_at = now()
                      where cluster_id = $1 and name = $2"
                ),
                Some(m),
            ),
            Outcome::Dropped => (
                format!(
                    "delete from {table}
                      where cluster_id = $1 and name = $2 and generation = $3 and state = 'absent'"
                ),
                None,
            ),
        };
        let mut query = sqlx::query(&sql).bind(cluster_id).bind(name).bind(generation);
        if let Some(m) = message {
            query = query.bind(m);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Ends a pass over a cluster that read desired state at `generation`. With no error, the
    /// cluster is converged up to that generation; otherwise it is retried at `retry_at`.
    /// Either way, waiting API requests are told.
    pub async fn finish_pass(
        &self,
        cluster_id: Uuid,
        generation: i64,
        server_version: Option<(i32, &str)>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        let (version_num, version) = server_version.unzip();
        sqlx::query(
            "update clusters
                set reconciled_generation = case when $3::text is null
                                                 then greatest(reconciled_generation, $2)
                                                 else reconciled_generation end,
                    attempts = case when $3::text is null then 0 else attempts + 1 end,
                    next_attempt_at = case when $3::text is null then now() else $4 end,
                    last_error = $3,
                    last_reconciled_at = now(),
                    server_version_num = coalesce($5, server_version_num),
                    server_version = coalesce($6, server_version),
                    status = case
                        when exists (select 1 from cluster_users u
                                      where u.cluster_id = $1 and u.role = 'primary' and u.sync_status = 'ready')
                         and exists (select 1 from cluster_databases d
                                      where d.cluster_id = $1 and d.is_default and d.sync_status = 'ready')
                        then 'online' else status end
              where cluster_id = $1",
        )
        .bind(cluster_id)
        .bind(generation)
        .bind(error)
        .bind(retry_at)
        .bind(version_num)
        .bind(version)
        .execute(&self.pool)
        .await?;
        sqlx::query("select pg_notify($1, $2)")
            .bind(RECONCILED_CHANNEL)
            .bind(cluster_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
