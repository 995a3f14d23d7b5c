//! The cluster lock: one reconciler at a time works on a cluster. It is a session-level
//! advisory lock on the metadata database, held on a session of its own, so that it goes with
//! the session if the process dies mid-pass.

use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use uuid::Uuid;

use super::Store;
use crate::error::Result;

/// A cluster's advisory lock, held on a dedicated metadata session until [`ClusterLock::unlock`].
/// Dropped without a clean unlock (a cancelled pass, a failed unlock), it closes its session,
/// which releases the lock, rather than handing the session back to the pool still locked.
#[derive(Debug)]
pub struct ClusterLock {
    session: Option<PoolConnection<Postgres>>,
    key: i64,
}

/// The advisory lock key of a cluster: its id folded into 64 bits.
fn lock_key(cluster_id: Uuid) -> i64 {
    let (hi, lo) = cluster_id.as_u64_pair();
    (hi ^ lo) as i64
}

impl Store {
    /// Takes `cluster_id`'s lock if no other session holds it; None when another one does.
    pub async fn try_lock_cluster(&self, cluster_id: Uuid) -> Result<Option<ClusterLock>> {
        let key = lock_key(cluster_id);
        let mut session = self.pool.acquire().await?;
        let locked = sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, key)
            .fetch_one(&mut *session)
            .await?;
        // A session without the lock goes back to the pool.
        Ok(locked.then(|| ClusterLock { session: Some(session), key }))
    }
}

impl ClusterLock {
    /// Releases the lock and gives its session back to the pool; if the unlock fails, the
    /// session is closed instead (which releases the lock too).
    pub async fn unlock(mut self) {
        let Some(mut session) = self.session.take() else { return };
        let unlocked =
            sqlx::query_scalar!("select pg_advisory_unlock($1)", self.key).fetch_one(&mut *session).await;
        if unlocked.is_err() {
            drop(session.detach());
        }
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            drop(session.detach());
        }
    }
}
