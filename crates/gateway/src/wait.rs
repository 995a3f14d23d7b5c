//! Waiting for the reconciler: finished passes are announced on the metadata database (heard
//! through the store's notification session, as [`Reconciled`]), and the last one heard is
//! kept per cluster; a request that wrote desired state re-reads its object after each pass
//! that may have seen its write (and every 250 ms regardless, in case a notification was lost)
//! until the object has settled or the bounded wait is over (`settle`, and what a create or a
//! delete adds to it). A pass that did not see the write cannot have settled it: waiting
//! requests skip that re-read, and the first look too when no pass heard so far saw the
//! write.

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
    /// The last pass heard over each cluster, kept for every cluster heard of since the
    /// process started (a channel of a few hundred bytes each; a cluster unregistered since
    /// keeps its entry until the process ends).
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

    /// A pass finished: kept as its cluster's last, and whoever waits on the cluster woken.
    fn passed(&self, pass: &Reconciled) {
        self.sender(pass.cluster_id).send_replace(Some(*pass));
    }

    /// Finished passes over `cluster_id`, from now on, until the subscription is dropped; and
    /// the last one heard before (None: none since the process started).
    fn subscribe(&self, cluster_id: Uuid) -> (Subscription, Option<Reconciled>) {
        let receiver = self.sender(cluster_id).subscribe();
        let last = *receiver.borrow();
        (Subscription { receiver }, last)
    }

    /// The cluster's channel of finished passes (made at the first pass or wait).
    fn sender(&self, cluster_id: Uuid) -> watch::Sender<Option<Reconciled>> {
        let mut passes = self.passes.lock().expect("waiter lock");
        passes.entry(cluster_id).or_insert_with(|| watch::channel(None).0).clone()
    }

    /// Calls `check` until it returns a value or `timeout` passes (then None): at once (for a
    /// write, only if a pass heard already may have seen it: a pass heard later wakes the
    /// wait), then after each pass over `cluster_id` that may have seen a write begun at
    /// `written_at` (None: after every pass), and every 250 ms.
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
        let (mut passes, last) = self.subscribe(cluster_id);
        let deadline = Instant::now() + timeout;
        let mut look = written_at.is_none() || may_have_seen(last, written_at);
        let found = loop {
            if look {
                match check().await {
                    Ok(Some(value)) => break Ok(Some(value)),
                    Err(e) => break Err(e),
                    Ok(None) => {}
                }
            }
            look = true;
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

/// Whether `pass` may have seen a write begun at `written_at` (None: any pass may have).
fn may_have_seen(pass: Option<Reconciled>, written_at: Option<DateTime<Utc>>) -> bool {
    pass.is_some_and(|pass| written_at.is_none_or(|at| pass.concerns(at)))
}

/// One request's wait on a cluster's passes.
struct Subscription {
    /// The last pass over the cluster that finished (passes over a cluster run one at a time).
    receiver: watch::Receiver<Option<Reconciled>>,
}

impl Subscription {
    /// Returns once a pass has finished since the last call that concerns a write begun at
    /// `written_at` (None: any pass does; see [`Reconciled::concerns`]).
    async fn concerning(&mut self, written_at: Option<DateTime<Utc>>) {
        loop {
            if self.receiver.changed().await.is_err() {
                return std::future::pending().await;
            }
            let last = *self.receiver.borrow_and_update();
            if may_have_seen(last, written_at) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_wait_starts_from_the_last_pass_heard_over_its_cluster() {
        let waiter = Waiter { passes: Mutex::new(HashMap::new()) };
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let pass = Reconciled { cluster_id: b, unseen_from: None };
        waiter.passed(&pass);
        let (mut first, last) = waiter.subscribe(a);
        assert_eq!(last, None, "no pass heard over a");
        assert_eq!(waiter.subscribe(b).1, Some(pass), "another cluster's pass is kept as its own");
        let (second, _) = waiter.subscribe(a);
        waiter.passed(&Reconciled { cluster_id: a, unseen_from: None });
        assert!(first.receiver.has_changed().unwrap() && second.receiver.has_changed().unwrap());
        assert!(first.concerning(None).now_or_never().is_some());
        let (_, last) = waiter.subscribe(a);
        assert_eq!(last, Some(Reconciled { cluster_id: a, unseen_from: None }));
    }

    #[test]
    fn a_write_is_looked_at_first_only_if_a_pass_heard_may_have_seen_it() {
        let written_at = Utc::now();
        let pass =
            |unseen_from| Some(Reconciled { cluster_id: Uuid::new_v4(), unseen_from: Some(unseen_from) });
        assert!(!may_have_seen(None, Some(written_at)), "no pass heard: none saw it");
        assert!(!may_have_seen(pass(written_at), Some(written_at)));
        assert!(may_have_seen(pass(written_at + chrono::Duration::microseconds(1)), Some(written_at)));
        assert!(may_have_seen(pass(written_at), None));
    }

    #[test]
    fn a_write_is_looked_at_again_only_after_a_pass_that_may_have_seen_it() {
        let waiter = Waiter { passes: Mutex::new(HashMap::new()) };
        let cluster_id = Uuid::new_v4();
        let written_at = Utc::now();
        let pass = |unseen_from: Option<DateTime<Utc>>| Reconciled { cluster_id, unseen_from };
        let (mut waiting, _) = waiter.subscribe(cluster_id);
        let (mut any, _) = waiter.subscribe(cluster_id);

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
