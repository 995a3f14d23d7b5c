//! Waiting for the reconciler: finished passes are announced on the metadata database (heard
//! through the store's notification session) and bump a counter per cluster that some request
//! waits on; a request that wrote desired state re-reads its object each time the counter
//! moves (and every 250 ms regardless, in case a notification was lost) until the object has
//! settled or the bounded wait is over (`settle`, and what a create or a delete adds to it).
//! Counters exist only while a request waits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgplane_core::lifecycle::{settled, Lifecycle, ObjectKind, SyncStatus};
use pgplane_core::notifications::Event;
use pgplane_core::store::RECONCILED_CHANNEL;
use pgplane_core::Store;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

const POLL: Duration = Duration::from_millis(250);

/// Tells waiting requests when a pass over their cluster has finished.
pub(crate) struct Waiter {
    passes: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
}

impl Waiter {
    /// Starts following finished passes.
    pub fn start(store: &Store) -> Arc<Self> {
        let waiter = Arc::new(Self { passes: Mutex::new(HashMap::new()) });
        let weak = Arc::downgrade(&waiter);
        let mut events = store.notifications().subscribe();
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(waiter) = weak.upgrade() else { return };
                match event {
                    Ok(Event::Notified { channel, payload }) if channel == RECONCILED_CHANNEL => {
                        if let Ok(id) = Uuid::parse_str(&payload) {
                            waiter.passed(id);
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        waiter
    }

    /// A pass over `cluster_id` finished: wakes whoever waits on it.
    fn passed(&self, cluster_id: Uuid) {
        if let Some(sender) = self.passes.lock().expect("waiter lock").get(&cluster_id) {
            sender.send_modify(|count| *count += 1);
        }
    }

    /// Finished passes over `cluster_id`, from now on, until the subscription is dropped.
    fn subscribe(&self, cluster_id: Uuid) -> Subscription<'_> {
        let receiver = self
            .passes
            .lock()
            .expect("waiter lock")
            .entry(cluster_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription { waiter: self, cluster_id, receiver }
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
        let mut passes = self.subscribe(cluster_id);
        let deadline = Instant::now() + timeout;
        let found = loop {
            match check().await {
                Ok(Some(value)) => break Ok(Some(value)),
                Err(e) => break Err(e),
                Ok(None) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                break Ok(None);
            }
            let nap = POLL.min(deadline - now);
            let _ = tokio::time::timeout(nap, passes.changed()).await;
        };
        drop(passes);
        found
    }
}

/// Waits for a newly written object to settle; when the target turned out to hold someone
/// else's object of that name, withdraws the create and answers 409, the target untouched.
pub(crate) async fn settle_create<T, F, Fut>(
    state: &AppState,
    kind: ObjectKind,
    written: &T,
    name: &str,
    cluster_id: Uuid,
    fetch: F,
) -> Result<T, ApiError>
where
    T: Lifecycle,
    F: FnMut() -> Fut,
    Fut: Future<Output = pgplane_core::Result<T>>,
{
    let object = settle(state, cluster_id, written.generation(), written.updated_at(), fetch)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if object.sync() == SyncStatus::Conflict
        && state.store.forget_unclaimed(kind, cluster_id, name, object.generation()).await?
    {
        return Err(ApiError::conflict(object.last_error().unwrap_or_default()));
    }
    Ok(object)
}

/// Asks for an object to be dropped from the target, then waits for the drop to settle like
/// any other write.
pub(crate) async fn settle_delete<T, F, Fut>(
    state: &AppState,
    kind: ObjectKind,
    cluster_id: Uuid,
    name: &str,
    fetch: F,
) -> Result<(), ApiError>
where
    T: Lifecycle,
    F: FnMut() -> Fut,
    Fut: Future<Output = pgplane_core::Result<T>>,
{
    let (generation, written_at) = state.store.request_deletion(kind, cluster_id, name).await?;
    settle(state, cluster_id, generation, written_at, fetch).await?;
    Ok(())
}

/// Waits (up to the configured apply timeout) for a write to settle on the target, then
/// returns the object as it is now (None when it is gone).
pub(crate) async fn settle<T, F, Fut>(
    state: &AppState,
    cluster_id: Uuid,
    generation: i64,
    written_at: DateTime<Utc>,
    mut fetch: F,
) -> Result<Option<T>, ApiError>
where
    T: Lifecycle,
    F: FnMut() -> Fut,
    Fut: Future<Output = pgplane_core::Result<T>>,
{
    let mut read = || {
        let f = fetch();
        async move {
            match f.await {
                Ok(o) => Ok(Some(o)),
                Err(pgplane_core::Error::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
    };
    let timeout = state.config.apply_timeout;
    let done = state
        .waiter
        .until(cluster_id, timeout, || {
            let r = read();
            async move {
                let object = r.await?;
                Ok(settled(object.as_ref(), generation, written_at).then_some(object))
            }
        })
        .await?;
    match done {
        Some(object) => Ok(object),
        None => Ok(read().await?),
    }
}

/// One request's wait on a cluster's passes. Dropping it (the request answered, or abandoned
/// mid-wait) forgets the cluster's counter once nobody else waits on it.
struct Subscription<'a> {
    waiter: &'a Waiter,
    cluster_id: Uuid,
    receiver: watch::Receiver<u64>,
}

impl Subscription<'_> {
    async fn changed(&mut self) {
        let _ = self.receiver.changed().await;
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut passes = self.waiter.passes.lock().expect("waiter lock");
        // This subscription's receiver is the last one when the count is 1 (it goes after this).
        if passes.get(&self.cluster_id).is_some_and(|sender| sender.receiver_count() == 1) {
            passes.remove(&self.cluster_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_followed_only_while_someone_waits_on_it() {
        let waiter = Waiter { passes: Mutex::new(HashMap::new()) };
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        waiter.passed(b);
        assert!(waiter.passes.lock().unwrap().is_empty(), "a pass nobody waits on leaves nothing behind");
        let first = waiter.subscribe(a);
        let second = waiter.subscribe(a);
        waiter.passed(a);
        assert!(first.receiver.has_changed().unwrap());
        drop(first);
        assert_eq!(waiter.passes.lock().unwrap().len(), 1, "still waited on");
        drop(second);
        assert!(waiter.passes.lock().unwrap().is_empty());
    }
}
