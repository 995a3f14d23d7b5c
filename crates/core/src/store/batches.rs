//! User deletion requests written together (a group commit): the requests for one cluster that
//! arrive while another is being written wait for it, then go in one transaction
//! (`pgplane_request_user_deletions`, migration 24): one commit, one bump of the cluster and
//! one wake-up for them all. A request that batch does not mark (refused, not found, or tied to
//! another request of the batch by an heir) is asked again on its own by the caller, which
//! says why; so is every request of a batch that failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::lifecycle::{DesiredState, SyncStatus, UserRole};

/// At most this many requests in one transaction (its statements grow with them).
const MOST: usize = 64;

/// What a batch tells a request: the user's new generation and when it was written, or None
/// (ask again alone).
pub(crate) type Marked = Option<(i64, DateTime<Utc>)>;

/// One deletion request waiting for its batch.
struct Waiting {
    name: String,
    heir: Option<String>,
    stored: bool,
    answer: oneshot::Sender<Marked>,
}

/// The requests waiting, per cluster; a cluster is in the map while its writer task runs.
#[derive(Default)]
pub(crate) struct DeletionBatches {
    waiting: Mutex<HashMap<Uuid, Vec<Waiting>>>,
}

impl std::fmt::Debug for DeletionBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeletionBatches").finish_non_exhaustive()
    }
}

impl DeletionBatches {
    /// Marks `name` absent with its heir (`heir`, or the one its row holds when `stored`) in
    /// the next batch of `cluster_id`'s requests. The batch is written by a task of its own, so
    /// that a request whose client goes away does not take the others' answers with it.
    pub(crate) async fn mark(
        self: &Arc<Self>,
        pool: &PgPool,
        cluster_id: Uuid,
        name: &str,
        heir: Option<&str>,
        stored: bool,
    ) -> Marked {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { name: name.into(), heir: heir.map(Into::into), stored, answer };
        let start = {
            let mut all = self.waiting.lock().expect("batches lock");
            let start = !all.contains_key(&cluster_id);
            all.entry(cluster_id).or_default().push(waiting);
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).write(pool.clone(), cluster_id));
        }
        answered.await.ok().flatten()
    }

    /// Writes `cluster_id`'s batches until none is waiting.
    async fn write(self: Arc<Self>, pool: PgPool, cluster_id: Uuid) {
        loop {
            let batch = self.take(cluster_id);
            if batch.is_empty() {
                return;
            }
            let marked = mark_together(&pool, cluster_id, &batch).await.unwrap_or_else(|e| {
                tracing::warn!(cluster.id = %cluster_id, error = %e, "deletion batch failed; each asks again");
                HashMap::new()
            });
            for w in batch {
                let _ = w.answer.send(marked.get(&w.name).copied());
            }
        }
    }

    /// The next batch: the first `MOST` requests waiting, one per user (a second request for
    /// the same user waits for the next). Empty when none waits, and the cluster then leaves
    /// the map, in the same critical section, so that the next request starts a writer.
    fn take(&self, cluster_id: Uuid) -> Vec<Waiting> {
        let mut all = self.waiting.lock().expect("batches lock");
        let Some(queue) = all.get_mut(&cluster_id) else { return Vec::new() };
        if queue.is_empty() {
            all.remove(&cluster_id);
            return Vec::new();
        }
        let mut batch: Vec<Waiting> = Vec::new();
        let mut later = Vec::new();
        for w in queue.drain(..) {
            if batch.len() < MOST && !batch.iter().any(|b| b.name == w.name) {
                batch.push(w);
            } else {
                later.push(w);
            }
        }
        *queue = later;
        batch
    }
}

/// One transaction for `batch`: the users it marked, with their generation and write time.
async fn mark_together(
    pool: &PgPool,
    cluster_id: Uuid,
    batch: &[Waiting],
) -> sqlx::Result<HashMap<String, (i64, DateTime<Utc>)>> {
    let names: Vec<&str> = batch.iter().map(|w| w.name.as_str()).collect();
    let heirs: Vec<Option<&str>> = batch.iter().map(|w| w.heir.as_deref()).collect();
    let stored: Vec<bool> = batch.iter().map(|w| w.stored).collect();
    let rows = sqlx::query!(
        r#"select marked as "name!", written_generation as "generation!", written_at as "updated_at!"
             from pgplane_request_user_deletions($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        cluster_id,
        &names as &[&str],
        &heirs as &[Option<&str>],
        &stored,
        DesiredState::Absent as _,
        DesiredState::Present as _,
        UserRole::Primary as _,
        SyncStatus::KEPT_BY_WRITE as _,
        SyncStatus::Ready.after_write() as _,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, (r.generation, r.updated_at))).collect())
}
