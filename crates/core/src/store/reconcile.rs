//! What the reconciler reads and writes in the metadata store: which clusters are due, the
//! cluster a pass works on (and whether its resync is due), which objects it has claimed on a
//! target, the outcomes of a pass (one statement per kind of object) and the end of each pass
//! (announced on the reconciled channel so that waiting API requests answer at once).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::objects::table;
use super::{Store, RECONCILED_CHANNEL};
use crate::error::Result;
use crate::lifecycle::{ObjectKind, Outcome, SyncStatus};
use crate::model::Cluster;

/// The outcome of one object, applied at the object generation the pass read.
#[derive(Debug, Clone)]
pub struct ObjectOutcome<'a> {
    pub kind: ObjectKind,
    pub name: &'a str,
    pub generation: i64,
    pub outcome: Outcome,
}

/// A cluster that needs a pass.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct DueCluster {
    pub cluster_id: Uuid,
    pub team_id: Uuid,
    /// Its desired state changed (a write waits for the pass); otherwise only its drift check
    /// is due.
    pub changed: bool,
}

/// A cluster as a pass starts on it.
#[derive(Debug, sqlx::FromRow)]
pub struct PassCluster {
    #[sqlx(flatten)]
    pub cluster: Cluster,
    /// No full pass has finished within the resync interval: this pass compares everything.
    pub resync_due: bool,
}

impl Store {
    /// Clusters that need a pass now: their desired state changed since the last converged pass,
    /// or their last full pass is older than `resync` (drift detection); never before their
    /// backoff time. Changed ones come first: a write is not kept waiting behind a drift round.
    /// Each comes with its team, which the reconciler shares its passes among.
    pub async fn due_clusters(&self, resync: Duration, limit: i64) -> Result<Vec<DueCluster>> {
        Ok(sqlx::query_as(
            "select cluster_id, team_id, generation > reconciled_generation as changed from clusters
              where next_attempt_at <= now()
                and (generation > reconciled_generation
                     or last_resync_at is null
                     or last_resync_at < now() - make_interval(secs => $1))
              order by generation > reconciled_generation desc, next_attempt_at
              limit $2",
        )
        .bind(resync.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The cluster a pass is about to work on, and whether its resync is due (judged by the
    /// metadata DB's clock, as `due_clusters` does).
    pub async fn cluster_for_pass(&self, cluster_id: Uuid, resync: Duration) -> Result<Option<PassCluster>> {
        Ok(sqlx::query_as(
            "select *, (last_resync_at is null
                        or last_resync_at < now() - make_interval(secs => $2)) as resync_due
               from clusters where cluster_id = $1",
        )
        .bind(cluster_id)
        .bind(resync.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records, before CREATE is issued, that pgplane is about to create these objects, so
    /// that a crash between the CREATE and its outcome does not make pgplane disown them.
    pub async fn claim(&self, kind: ObjectKind, cluster_id: Uuid, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "update {} set claimed = true where cluster_id = $1 and name = any($2) and not claimed",
            table(kind)
        );
        sqlx::query(&sql).bind(cluster_id).bind(names).execute(&self.pool).await?;
        Ok(())
    }

    /// Records an error on objects a pass had to leave out (their stored secret cannot be
    /// opened), whatever their generation; it stays until a pass records an outcome for them.
    pub async fn record_left_out(
        &self,
        cluster_id: Uuid,
        kind: ObjectKind,
        left_out: &[(&str, &str)],
    ) -> Result<()> {
        if left_out.is_empty() {
            return Ok(());
        }
        let (names, messages): (Vec<&str>, Vec<&str>) = left_out.iter().copied().unzip();
        let sql = format!(
            "update {} t set last_error = o.message, updated_at = now()
               from unnest($2::text[], $3::text[]) as o(name, message)
              where t.cluster_id = $1 and t.name = o.name",
            table(kind)
        );
        sqlx::query(&sql).bind(cluster_id).bind(&names).bind(&messages).execute(&self.pool).await?;
        Ok(())
    }

    /// Records the outcomes of a pass: one statement per kind of object, doing to each row
    /// what [`Outcome::effect`] says, against the row as it is when the statement runs (its
    /// desired state may have changed since the pass read it).
    pub async fn record_outcomes(&self, cluster_id: Uuid, outcomes: &[ObjectOutcome<'_>]) -> Result<()> {
        for kind in [ObjectKind::User, ObjectKind::Database] {
            let of_kind: Vec<&ObjectOutcome<'_>> = outcomes.iter().filter(|o| o.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let effects: Vec<_> = of_kind.iter().map(|o| o.outcome.effect()).collect();
            let names: Vec<&str> = of_kind.iter().map(|o| o.name).collect();
            let generations: Vec<i64> = of_kind.iter().map(|o| o.generation).collect();
            let messages: Vec<Option<&str>> = of_kind.iter().map(|o| o.outcome.message()).collect();
            let flags = |f: fn(&crate::lifecycle::OutcomeEffect) -> bool| {
                effects.iter().map(f).collect::<Vec<bool>>()
            };
            let syncs = |f: fn(&crate::lifecycle::OutcomeEffect) -> Option<SyncStatus>| {
                effects.iter().map(|e| f(e).map(SyncStatus::as_str)).collect::<Vec<Option<&str>>>()
            };
            let table = table(kind);
            let sql = format!(
                "with o as (
                   select * from unnest($2::text[], $3::int8[], $4::text[], $5::bool[], $6::bool[],
                                        $7::text[], $8::text[], $9::bool[], $10::bool[])
                            as o(name, generation, message, remove, advance,
                                 sync_if_current, sync_if_moved_on, unclaim, only_if_not_applied_since)
                 ), dropped as (
                   delete from {table} t using o
                    where t.cluster_id = $1 and t.name = o.name and o.remove
                      and t.generation = o.generation and t.state = 'absent'
                 )
                 update {table} t
                    set applied_generation = case when o.advance then greatest(t.applied_generation, o.generation)
                                                  else t.applied_generation end,
                        last_error = o.message,
                        sync_status = coalesce(case when t.generation = o.generation then o.sync_if_current
                                                    else o.sync_if_moved_on end,
                                               t.sync_status),
                        claimed = t.claimed and not o.unclaim,
                        updated_at = now()
                   from o
                  where t.cluster_id = $1 and t.name = o.name and not o.remove
                    and (not o.only_if_not_applied_since or t.applied_generation < o.generation)"
            );
            sqlx::query(&sql)
                .bind(cluster_id)
                .bind(&names)
                .bind(&generations)
                .bind(&messages)
                .bind(flags(|e| e.delete))
                .bind(flags(|e| e.advance))
                .bind(syncs(|e| e.sync_if_current))
                .bind(syncs(|e| e.sync_if_moved_on))
                .bind(flags(|e| e.unclaim))
                .bind(flags(|e| e.only_if_not_applied_since))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Ends a pass over `cluster` as the pass read it (desired state at its generation). With
    /// no error, the cluster is converged up to that generation and, after a full pass,
    /// resynced, unless its registration changed meanwhile (`PUT …/pgplane` seals the admin
    /// password anew, so the sealed bytes tell): the new target still needs its full pass.
    /// With an error it is retried at `retry_at`. Either way, waiting API requests are told, in
    /// the same statement. Returns None if the cluster no longer exists, otherwise whether it
    /// is due again at once (its desired state changed during the pass, which succeeded).
    pub async fn finish_pass(
        &self,
        cluster: &Cluster,
        full: bool,
        server_version: Option<(i32, &str)>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<Option<bool>> {
        let (version_num, version) = server_version.unzip();
        let finished: Option<(bool, String)> = sqlx::query_as(
            "with c as (
               update clusters
                  set reconciled_generation = case when $3::text is null
                                                   then greatest(reconciled_generation, $2)
                                                   else reconciled_generation end,
                      attempts = case when $3::text is null then 0 else attempts + 1 end,
                      next_attempt_at = case when $3::text is null then now() else $4 end,
                      last_error = $3,
                      last_reconciled_at = now(),
                      last_resync_at = case when $7 and $3::text is null and admin_password_sealed = $9
                                            then now() else last_resync_at end,
                      server_version_num = coalesce($5, server_version_num),
                      server_version = coalesce($6, server_version),
                      status = case
                          when exists (select 1 from cluster_users u
                                        where u.cluster_id = $1 and u.role = 'primary' and u.sync_status = 'ready')
                           and exists (select 1 from cluster_databases d
                                        where d.cluster_id = $1 and d.is_default and d.sync_status = 'ready')
                          then 'online' else status end
                where cluster_id = $1
            returning cluster_id, generation > reconciled_generation and last_error is null as more
             )
             select more, pg_notify($8, cluster_id::text)::text from c",
        )
        .bind(cluster.cluster_id)
        .bind(cluster.generation)
        .bind(error)
        .bind(retry_at)
        .bind(version_num)
        .bind(version)
        .bind(full)
        .bind(RECONCILED_CHANNEL)
        .bind(&cluster.admin_password_sealed)
        .fetch_optional(&self.pool)
        .await?;
        Ok(finished.map(|(more, _)| more))
    }
}
