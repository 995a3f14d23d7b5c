//! Retention of the event logs: deletes audit and drift events older than a cut-off, in small
//! batches (short transactions, no long lock on a busy table). Deleting is idempotent, so any
//! number of replicas may prune at once.

use chrono::{DateTime, Utc};

use super::Store;
use crate::error::Result;

/// An event log that is pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLog {
    Audit,
    Drift,
}

impl Store {
    /// Deletes the events of `log` from before `cutoff`, `batch` rows per statement, until none
    /// is left. Returns how many were deleted.
    pub async fn prune_events(&self, log: EventLog, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            macro_rules! prune {
                ($table:literal, $at:literal) => {
                    sqlx::query!(
                        "delete from "
                            + $table
                            + " where event_id in (select event_id from "
                            + $table
                            + " where "
                            + $at
                            + " < $1 order by "
                            + $at
                            + " limit $2)",
                        cutoff,
                        batch
                    )
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                };
            }
            let done = match log {
                EventLog::Audit => prune!("audit_events", "at"),
                EventLog::Drift => prune!("drift_events", "found_at"),
            };
            deleted += done;
            if done < batch.max(1) as u64 {
                return Ok(deleted);
            }
        }
    }
}
