//! Waiting for the reconciler: a task LISTENs on the metadata DB for finished passes and bumps
//! a per-cluster counter; a request that wrote desired state re-reads its object each time the
//! counter moves (and every 250 ms regardless, in case a notification was lost) until the
//! object has settled or the bounded wait is over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgplane_core::store::RECONCILED_CHANNEL;
use pgplane_core::Store;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

const POLL: Duration = Duration::from_millis(250);

/// Tells waiting requests when a pass over their cluster has finished.
pub(crate) struct Waiter {
    passes: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
}

impl Waiter {
    /// Starts the listening task.
    pub fn start(store: Store) -> Arc<Self> {
        let waiter = Arc::new(Self { passes: Mutex::new(HashMap::new()) });
        let weak = Arc::downgrade(&waiter);
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut l = PgListener::connect_with(store.pool()).await?;
                    l.listen(RECONCILED_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                let mut listener = match listener.await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for finished passes; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if weak.strong_count() == 0 {
                            return;
                        }
                        continue;
                    }
                };
                while let Ok(n) = listener.recv().await {
                    let Some(waiter) = weak.upgrade() else { return };
                    if let Ok(id) = Uuid::parse_str(n.payload()) {
                        waiter.sender(id).send_modify(|count| *count += 1);
                    }
                }
            }
        });
        waiter
    }

    fn sender(&self, cluster_id: Uuid) -> watch::Sender<u64> {
        self.passes
            .lock()
            .expect("waiter lock")
            .entry(cluster_id)
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Calls `check` until it returns a value or `timeout` passes (then None).
    pub async fn until<T, F, Fut>(
        &self,
        cluster_id: Uuid,
        timeout: Duration,
        mut check: F,
    ) -> pgplane_core::Result<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = pgplane_core::Result<Option<T>>>,
    {
        let mut passes = self.sender(cluster_id).subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await? {
                return Ok(Some(value));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = POLL.min(deadline - now);
            let _ = tokio::time::timeout(nap, passes.changed()).await;
        }
    }
}
