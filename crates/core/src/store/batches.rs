//! Requests about one cluster's users done together (a group commit): the requests of a kind
//! (a new user, `objects::Creation`; a password reset, `objects::Reset`; a user's deletion,
//! `objects::Deletion`; a read of a user, `objects::Reading`) that arrive while another of
//! that kind is being done for the same cluster, or together with it (woken by one event, as
//! the waiters of a finished pass are), wait for it, then go in one statement or transaction:
//! for writes, one commit, one bump of the cluster and one wake-up for them all, where each
//! paid for its own and the commits queued on the cluster's row; for reads, one round trip.
//! What a kind does is its [`Batched::run`]; a request its batch does not answer (refused,
//! taken, not found, tied to another request of the batch), and every request of a batch that
//! failed, is asked again on its own by the caller, which says why.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Lets the tasks woken together with the one that called this run first: a task that takes
/// the requests of its batch (or of its audit write) when the first of them arrives would
/// otherwise take that one alone, as tasks woken by one event (the waiters of a finished pass)
/// are queued to run after the one that spawned it. A yield usually waits for them, but ends
/// before they ran when the runtime's periodic maintenance (every few dozen task polls) comes
/// right after it; a second yield then usually waits for them (unless dozens are queued before
/// them: the batch is then smaller, never wrong).
pub async fn let_those_woken_with_it_run() {
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
}

/// At most this many requests in one batch (its statements grow with them).
const MOST: usize = 64;

/// A kind of request done in batches.
pub(crate) trait Batched: Send + Sized + 'static {
    /// What a request answered gets back.
    type Out: Send + 'static;

    /// The user the request is for: a batch holds one request per user.
    fn user(&self) -> &str;

    /// Does `batch`, all of `cluster_id`'s, in one statement or transaction; what each
    /// request answered gets, by user.
    fn run(
        pool: &PgPool,
        cluster_id: Uuid,
        batch: &[Self],
    ) -> impl Future<Output = sqlx::Result<HashMap<String, Self::Out>>> + Send;
}

/// A request waiting for its batch, with where its answer goes.
type Waiting<R> = (R, oneshot::Sender<<R as Batched>::Out>);

/// The requests of one kind waiting, per cluster; a cluster is in the map while its runner
/// task runs.
pub(crate) struct Batches<R: Batched> {
    waiting: Mutex<HashMap<Uuid, Vec<Waiting<R>>>>,
}

impl<R: Batched> Default for Batches<R> {
    fn default() -> Self {
        Self { waiting: Mutex::default() }
    }
}

impl<R: Batched> std::fmt::Debug for Batches<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").finish_non_exhaustive()
    }
}

impl<R: Batched> Batches<R> {
    /// Puts `request` in the next batch of `cluster_id`'s; None when that batch did not answer
    /// it (ask again alone). The batch is done by a task of its own, so that a request whose
    /// client goes away does not take the others' answers with it.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        pool: &PgPool,
        cluster_id: Uuid,
        request: R,
    ) -> Option<R::Out> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut all = self.waiting.lock().expect("batches lock");
            let start = !all.contains_key(&cluster_id);
            all.entry(cluster_id).or_default().push((request, answer));
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).drain(pool.clone(), cluster_id));
        }
        answered.await.ok()
    }

    /// Does `cluster_id`'s batches until none is waiting.
    async fn drain(self: Arc<Self>, pool: PgPool, cluster_id: Uuid) {
        let_those_woken_with_it_run().await;
        loop {
            let (batch, answers) = self.take(cluster_id);
            if batch.is_empty() {
                return;
            }
            let mut answered = R::run(&pool, cluster_id, &batch).await.unwrap_or_else(|e| {
                // A name taken (another cluster's on the same server) fails the whole batch:
                // the request that took it hears why when it asks alone.
                if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
                    tracing::debug!(cluster.id = %cluster_id, "a batch hit a unique key; each asks again");
                } else {
                    tracing::warn!(cluster.id = %cluster_id, error = %e, "a batch failed; each asks again");
                }
                HashMap::new()
            });
            for (request, answer) in batch.iter().zip(answers) {
                if let Some(out) = answered.remove(request.user()) {
                    let _ = answer.send(out);
                }
            }
        }
    }

    /// The next batch: the first `MOST` requests waiting, one per user (a second request for
    /// the same user waits for the next), with their answers. Empty when none waits; the
    /// cluster then leaves the map in the same critical section, so that the next request
    /// starts a runner.
    fn take(&self, cluster_id: Uuid) -> (Vec<R>, Vec<oneshot::Sender<R::Out>>) {
        let mut all = self.waiting.lock().expect("batches lock");
        let Some(queue) = all.get_mut(&cluster_id) else { return (Vec::new(), Vec::new()) };
        if queue.is_empty() {
            all.remove(&cluster_id);
            return (Vec::new(), Vec::new());
        }
        let (mut batch, mut answers, mut later) = (Vec::new(), Vec::new(), Vec::new());
        for (request, answer) in queue.drain(..) {
            if batch.len() < MOST && !batch.iter().any(|b: &R| b.user() == request.user()) {
                batch.push(request);
                answers.push(answer);
            } else {
                later.push((request, answer));
            }
        }
        *queue = later;
        (batch, answers)
    }
}
