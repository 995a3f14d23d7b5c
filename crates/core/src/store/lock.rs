//! The cluster lock: one reconciler at a time works on a cluster. It is a session-level
//! advisory lock on the metadata database, held on a session of its own, so that it goes with
//! the session if the process dies mid-pass. A process that dies so may leave statements
//! running on the target: the processes this deployment has run are kept (`processes`), so
//! that the next pass can tell them dead and end what they left (`Store::dead_processes`).

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

impl Store {
    /// Records this process (`crate::instance::name`) among the deployment's, and forgets those
    /// started more than a week ago that have no session left on the metadata database.
    pub async fn register_process(&self) -> Result<()> {
        sqlx::query!(
            "with forgotten as (
                delete from processes p
                 where p.started_at < now() - interval '7 days'
                   and not exists (select from pg_catalog.pg_stat_activity a
                                    where a.application_name = p.name and a.datname = current_database()))
             insert into processes (name) values ($1) on conflict (name) do nothing",
            crate::instance::name()
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Which of `names` (processes seen at work on a target) are processes of this deployment
    /// that are gone: recorded here, and no session of theirs left on the metadata database
    /// (every live process holds one, its notification session). A process of another
    /// deployment sharing the target is never among them.
    pub async fn dead_processes(&self, names: &[String]) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"select p.name as "name!" from processes p
                where p.name = any($1)
                  and not exists (select from pg_catalog.pg_stat_activity a
                                   where a.application_name = p.name and a.datname = current_database())"#,
            names
        )
        .fetch_all(&self.pool)
        .await?)
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
