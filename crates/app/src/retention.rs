//! Retention of the event logs in a pgplane process: at start and then every hour, deletes the audit and drift
//! events older than their configured number of days (0 keeps them forever). Every replica
//! prunes; the deletes are idempotent, so they need no coordination.

use std::future::Future;
use std::time::Duration;

use pgplane_core::store::EventLog;
use pgplane_core::Store;

/// How often the logs are pruned.
const EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement.
const BATCH: i64 = 1000;

/// How many days each log keeps (0: forever).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit_days: u32,
    pub drift_days: u32,
}

impl Retention {
    fn logs(self) -> impl Iterator<Item = (EventLog, u32)> {
        [(EventLog::Audit, self.audit_days), (EventLog::Drift, self.drift_days)]
            .into_iter()
            .filter(|(_, days)| *days > 0)
    }

    /// Prunes until `stopped` completes.
    pub async fn run(self, store: Store, stopped: impl Future<Output = ()>) {
        if self.logs().next().is_none() {
            return stopped.await;
        }
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = ticks.tick() => self.prune(&store).await,
            }
        }
    }

    async fn prune(self, store: &Store) {
        for (log, days) in self.logs() {
            let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
            match store.prune_events(log, cutoff, BATCH).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(log = ?log, deleted, days, "pruned old events"),
                Err(e) => tracing::warn!(log = ?log, error = %e, "cannot prune old events"),
            }
        }
    }
}
