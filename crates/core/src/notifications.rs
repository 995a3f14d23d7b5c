//! Notifications from the metadata database: one LISTEN session per process for every channel
//! pgplane uses (wake-ups for reconcilers, finished passes for waiting API requests, token
//! revocations), reconnected with one policy, and handed to every part that subscribed. A
//! subscriber also hears when the session is (re)connected or lost, since notifications sent
//! while it was down are gone: whoever cannot afford to miss one (token revocation) treats a
//! gap as "anything may have happened".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;

use crate::store::{RECONCILED_CHANNEL, TOKENS_CHANNEL, WAKE_CHANNEL};

/// The channels the session listens on.
const CHANNELS: [&str; 3] = [WAKE_CHANNEL, RECONCILED_CHANNEL, TOKENS_CHANNEL];

/// How long to wait before connecting again after a failure: 1 s doubling to 30 s.
fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The session is (again) listening: notifications from now on arrive, earlier ones may
    /// have been missed.
    Connected,
    /// The session was lost: notifications are missed until the next `Connected`.
    Lost,
    /// A notification on one of the channels.
    Notified { channel: &'static str, payload: String },
}

/// Buffered events per subscriber; one that falls further behind hears `Lagged` (a gap).
const BUFFER: usize = 1024;

/// The process's notification session. Cheap to share; its task ends once every handle is
/// dropped (or the pool is closed).
#[derive(Debug)]
pub struct Notifications {
    events: broadcast::Sender<Event>,
    connected: AtomicBool,
}

impl Notifications {
    /// Starts the listening task on `pool`.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let notifications =
            Arc::new(Self { events: broadcast::channel(BUFFER).0, connected: AtomicBool::new(false) });
        tokio::spawn(listen(Arc::downgrade(&notifications), pool));
        notifications
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Whether the session is listening now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn tell(&self, event: Event) {
        if matches!(event, Event::Connected | Event::Lost) {
            self.connected.store(event == Event::Connected, Ordering::SeqCst);
        }
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

/// Connects, listens and dispatches until every handle is gone.
async fn listen(handle: Weak<Notifications>, pool: PgPool) {
    let mut failures = 0;
    while handle.strong_count() > 0 && !pool.is_closed() {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all(CHANNELS).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for notifications from the metadata database; retrying");
                tokio::time::sleep(reconnect_delay(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        let Some(n) = handle.upgrade() else { return };
        n.tell(Event::Connected);
        drop(n);
        // `try_recv` reports a lost connection (None) instead of reconnecting behind our back,
        // as `recv` does, so that subscribers hear of the gap.
        loop {
            let received = listener.try_recv().await;
            let Some(n) = handle.upgrade() else { return };
            match received {
                Ok(Some(notification)) => {
                    let channel = CHANNELS.into_iter().find(|c| *c == notification.channel());
                    if let Some(channel) = channel {
                        n.tell(Event::Notified { channel, payload: notification.payload().to_string() });
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the notification session to the metadata database; reconnecting");
                    n.tell(Event::Lost);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnecting_backs_off_to_a_cap() {
        assert_eq!(reconnect_delay(0), Duration::from_secs(1));
        assert_eq!(reconnect_delay(2), Duration::from_secs(4));
        assert_eq!(reconnect_delay(40), Duration::from_secs(30));
    }
}
