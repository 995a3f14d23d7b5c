//! Waiting for the reconciler: finished passes are announced on the metadata database (heard
//! through the store's notification session, as [`Reconciled`]) and kept per cluster that some
//! request waits on; a request that wrote desired state re-reads its object after each pass
//! that may have seen its write (and every 250 ms regardless, in case a notification was lost)
//! until the object has settled or the bounded wait is over (`settle`, and what a create or a
//! delete adds to it). A pass that did not see the write cannot have settled it: waiting
//! requests skip that re-read. Clusters are followed only while a request waits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgplane_core::lifecycle::{settled, Lifecycle, ObjectKind, SyncStatus};
use pgplane_core::notifications::Event;
use pgplane_core::store::{Reconciled, RECONCILED_CHANNEL};
use pgplane_core::Store;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

const POLL: Duration = Duration::from_millis(250);

/// Tells waiting requests when a pass over their cluster has finished.
pub(crate) struct Waiter {
    passes: Mutex<HashMap<Uuid, watch::Sender<Option<Reconciled>>>>,
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
                        if let Some(pass) = Reconciled::parse(&payload) {
                            waiter.passed(&pass);
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        waiter
    }

    /// A pass finished: wakes whoever waits on its cluster.
    fn passed(&self, pass: &Reconciled) {
        if let Some(sender) = self.passes.lock().expect("waiter lock").get(&pass.cluster_id) {
            sender.send_replace(Some(*pass));
        }
    }

    /// Finished passes over `cluster_id`, from now on, until the subscription is dropped.
    fn subscribe(&self, cluster_id: Uuid) -> Subscription<'_> {
        let receiver = self
            .passes
            .lock()
            .expect("waiter lock")
            .entry(cluster_id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Subscription { waiter: self, cluster_id, receiver }
    }

    /// Calls `check` until it returns a value or `timeout` passes (then None): at once, then
    /// after each pass over `cluster_id` that may have seen a write begun at `written_at` (None:
    /// after every pass), and every 250 ms.
    pub async fn until<T, F, Fut>(
        &self,
        cluster_id: Uuid,
        written_at: Option<DateTime<Utc>>,
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
            let _ = tokio::time::timeout(nap, passes.concerning(written_at)).await;
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
        .until(cluster_id, Some(written_at), timeout, || {
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
/// mid-wait) stops following the cluster once nobody else waits on it.
struct Subscription<'a> {
    waiter: &'a Waiter,
    cluster_id: Uuid,
    /// The last pass over the cluster that finished (passes over a cluster run one at a time).
    receiver: watch::Receiver<Option<Reconciled>>,
}

impl Subscription<'_> {
    /// Returns once a pass has finished since the last call that concerns a write begun at
    /// `written_at` (None: any pass does; see [`Reconciled::concerns`]).
    async fn concerning(&mut self, written_at: Option<DateTime<Utc>>) {
        loop {
            if self.receiver.changed().await.is_err() {
                return std::future::pending().await;
            }
            let last = *self.receiver.borrow_and_update();
            if last.is_some_and(|pass| written_at.is_none_or(|at| pass.concerns(at))) {
                return;
            }
        }
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
        waiter.passed(&Reconciled { cluster_id: b, unseen_from: None });
        assert!(waiter.passes.lock().unwrap().is_empty(), "a pass nobody waits on leaves nothing behind");
        let first = waiter.subscribe(a);
        let second = waiter.subscribe(a);
        waiter.passed(&Reconciled { cluster_id: a, unseen_from: None });
        assert!(first.receiver.has_changed().unwrap());
        drop(first);
        assert_eq!(waiter.passes.lock().unwrap().len(), 1, "still waited on");
        drop(second);
        assert!(waiter.passes.lock().unwrap().is_empty());
    }

    #[test]
    fn a_write_is_looked_at_again_only_after_a_pass_that_may_have_seen_it() {
        use futures::FutureExt;
        let waiter = Waiter { passes: Mutex::new(HashMap::new()) };
        let cluster_id = Uuid::new_v4();
        let written_at = Utc::now();
        let pass = |unseen_from: Option<DateTime<Utc>>| Reconciled { cluster_id, unseen_from };
        let mut waiting = waiter.subscribe(cluster_id);
        let mut any = waiter.subscribe(cluster_id);

        waiter.passed(&pass(Some(written_at - chrono::Duration::milliseconds(3))));
        assert!(waiting.concerning(Some(written_at)).now_or_never().is_none(), "it saw nothing that late");
        waiter.passed(&pass(Some(written_at)));
        assert!(waiting.concerning(Some(written_at)).now_or_never().is_none(), "nor the write itself");
        assert!(any.concerning(None).now_or_never().is_some(), "without a time, every pass concerns");

        waiter.passed(&pass(Some(written_at + chrono::Duration::microseconds(1))));
        assert!(waiting.concerning(Some(written_at)).now_or_never().is_some());
        assert!(waiting.concerning(Some(written_at)).now_or_never().is_none(), "once per pass");
        waiter.passed(&pass(None));
        assert!(
            waiting.concerning(Some(written_at)).now_or_never().is_some(),
            "a pass of unknown time may concern it"
        );
    }
}
