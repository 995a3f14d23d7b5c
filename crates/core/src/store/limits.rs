//! Allowances shared by every gateway replica (registration probes per team, failed
//! authentications per client address and per token id): one counter per subject in the
//! metadata database, counted in windows. A window starts with the subject's first event after
//! the previous window ended; counting is one atomic upsert, so replicas never lose a count.

use std::time::Duration;

use super::Store;
use crate::error::Result;

/// How long the counter of a subject that has been quiet for a window is kept.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl Store {
    /// Counts one event of `subject` in its current window of `window`; returns the count so
    /// far in that window (this event included) and the time left until the window ends.
    pub async fn count_event(&self, subject: &str, window: Duration) -> Result<(u32, Duration)> {
        let counted = sqlx::query!(
            r#"insert into limit_counters as c (subject, window_start, count) values ($1, now(), 1)
               on conflict (subject) do update
                  set count = case when c.window_start > now() - make_interval(secs => $2)
                                   then c.count + 1 else 1 end,
                      window_start = case when c.window_start > now() - make_interval(secs => $2)
                                          then c.window_start else now() end
               returning count,
                         extract(epoch from window_start + make_interval(secs => $2) - now())::float8 as "left!""#,
            subject,
            window.as_secs_f64()
        )
        .fetch_one(&self.pool)
        .await?;
        let (count, left) = (counted.count, counted.left);
        Ok((u32::try_from(count).unwrap_or(0), Duration::from_secs_f64(left.max(0.0))))
    }

    /// The time left in the current window of the first of `subjects` (with its allowance) that
    /// has counted at least its allowance of events there; None when none has.
    pub async fn allowance_used_up(
        &self,
        subjects: &[(&str, u32)],
        window: Duration,
    ) -> Result<Option<Duration>> {
        let (names, limits): (Vec<&str>, Vec<i32>) =
            subjects.iter().map(|(s, n)| (*s, i32::try_from(*n).unwrap_or(i32::MAX))).unzip();
        let left: Option<f64> = sqlx::query_scalar!(
            "select max(extract(epoch from c.window_start + make_interval(secs => $3) - now()))::float8
               from limit_counters c
               join unnest($1::text[], $2::int4[]) as s(subject, allowance) using (subject)
              where c.window_start > now() - make_interval(secs => $3) and c.count >= s.allowance",
            &names as &[&str],
            &limits,
            window.as_secs_f64()
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(left.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    /// Forgets the counters of subjects quiet for a while (keeps the table small).
    pub async fn forget_quiet_counters(&self) -> Result<u64> {
        let deleted = sqlx::query!(
            "delete from limit_counters where window_start < now() - make_interval(secs => $1)",
            FORGET_AFTER.as_secs_f64()
        )
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}
