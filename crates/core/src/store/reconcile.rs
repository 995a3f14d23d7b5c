//! What the reconciler reads and writes in the metadata store: which clusters are due, the
//! cluster a pass works on (and whether its resync is due), which objects it has claimed on a
//! target, the outcomes of a pass (one statement per kind of object) and the end of each pass
//! (announced on the reconciled channel so that waiting API requests answer at once). What
//! recording an outcome and ending a pass do is computed in `crate::lifecycle`; the statements
//! here execute it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, RECONCILED_CHANNEL};
use crate::error::Result;
use crate::lifecycle::{ClusterStatus, DesiredState, ObjectKind, Outcome, PassEnd, SyncStatus, UserRole};
use crate::model::Cluster;

/// The outcome of one object, applied at the object generation the pass read.
#[derive(Debug, Clone)]
pub struct ObjectOutcome<'a> {
    pub kind: ObjectKind,
    pub name: &'a str,
    pub generation: i64,
    pub outcome: Outcome,
}

/// What a finished pass announces on [`RECONCILED_CHANNEL`]: its cluster and, when known, the
/// time from which writes were not seen by it (by the metadata database's clock): it read the
/// cluster and then its objects, and holds no object written by a write that began then or
/// later. A request waiting on such a write need not look again yet: the write moved the
/// cluster's generation past what the pass read, so another pass follows at once. Payload: the
/// cluster id, then a space and that time in microseconds since the Unix epoch when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub cluster_id: Uuid,
    pub unseen_from: Option<DateTime<Utc>>,
}

impl Reconciled {
    /// Reads a payload (None: not one).
    pub fn parse(payload: &str) -> Option<Self> {
        let (id, unseen_from) = match payload.split_once(' ') {
            Some((id, micros)) => (id, Some(DateTime::from_timestamp_micros(micros.parse().ok()?)?)),
            None => (payload, None),
        };
        Some(Self { cluster_id: Uuid::parse_str(id).ok()?, unseen_from })
    }

    /// Whether a request waiting on a write that began at `written_at` should look again: the
    /// pass may have seen it.
    pub fn concerns(&self, written_at: DateTime<Utc>) -> bool {
        self.unseen_from.is_none_or(|unseen_from| written_at < unseen_from)
    }
}

/// When a pass read its cluster (its objects were read after), and the time from which writes
/// were not seen by it (see [`Reconciled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassRead {
    pub at: DateTime<Utc>,
    pub unseen_from: DateTime<Utc>,
}

/// A cluster that needs a pass.
#[derive(Debug, Clone, Copy)]
pub struct DueCluster {
    pub cluster_id: Uuid,
    pub team_id: Uuid,
    /// Its desired state changed (a write waits for the pass); otherwise only its drift check
    /// is due.
    pub changed: bool,
}

/// A cluster as a pass starts on it.
#[derive(Debug)]
pub struct PassCluster {
    pub cluster: Cluster,
    /// No full pass has finished within the resync interval: this pass compares everything.
    pub resync_due: bool,
    /// When it was read, by the metadata database's clock: a user whose `valid_until` is not
    /// later has expired for this pass.
    pub read_at: DateTime<Utc>,
    /// Another cluster is registered on the server it was last found on (`server_id`), as
    /// `Store::shares_server` would say for that server.
    pub shares_server: bool,
    /// It has access levels granted or group roles recorded: without either (and no user's
    /// levels pending), a pass has no access work and reads nothing more for it.
    pub has_access: bool,
}

/// What [`Store::mark`] records on named rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Users or databases pgplane is about to create (the CREATE is issued next), so that a
    /// crash between the CREATE and its outcome does not make pgplane disown them.
    Claimed(ObjectKind),
    /// Users whose alternate logins pgplane is about to create (named by those logins).
    AlternateClaimed,
    /// Databases closed to PUBLIC.
    ClosedToPublic,
}

impl Store {
    /// Clusters that need a pass now: their desired state changed since the last converged pass,
    /// a user of theirs expired (or a rotation's grace ended) and its sessions are still to
    /// end, or their last full pass is
    /// older than `resync` (drift detection); never before their
    /// backoff time. Changed ones come first: a write is not kept waiting behind a drift round.
    /// Each comes with its team, which the reconciler shares its passes among.
    pub async fn due_clusters(&self, resync: Duration, limit: i64) -> Result<Vec<DueCluster>> {
        Ok(sqlx::query_as!(
            DueCluster,
            r#"select cluster_id, team_id, generation > reconciled_generation as "changed!" from clusters
                where next_attempt_at <= now()
                  and (generation > reconciled_generation
                       or last_resync_at is null
                       or last_resync_at < now() - make_interval(secs => $1)
                       or cluster_id in (select u.cluster_id from cluster_users u
                                          where u.valid_until <= now() and u.expiry_enforced_at is null)
                       or cluster_id in (select u.cluster_id from cluster_users u where u.grace_until <= now()))
                order by generation > reconciled_generation desc, next_attempt_at
                limit $2"#,
            resync.as_secs_f64(),
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The cluster a pass is about to work on, and whether its resync is due (judged by the
    /// metadata DB's clock, as `due_clusters` does).
    pub async fn cluster_for_pass(&self, cluster_id: Uuid, resync: Duration) -> Result<Option<PassCluster>> {
        let row = sqlx::query!(
            r#"select cluster_id, team_id, name, region, size, num_nodes, tags, host, port, admin_user,
                      admin_password_sealed, admin_database, sslmode, primary_user, default_database,
                      server_version_num, server_version, status as "status: ClusterStatus", generation,
                      reconciled_generation, last_error, last_reconciled_at, attempts, next_attempt_at,
                      created_at, updated_at, ca_certificate, last_resync_at, server_id,
                      (last_resync_at is null
                       or last_resync_at < now() - make_interval(secs => $2)) as "resync_due!",
                      now() as "read_at!",
                      exists (select 1 from clusters o
                               where o.server_id = c.server_id and o.cluster_id <> c.cluster_id) as "shares_server!",
                      (exists (select 1 from cluster_user_access a where a.cluster_id = c.cluster_id)
                       or exists (select 1 from cluster_access_groups g where g.cluster_id = c.cluster_id))
                        as "has_access!"
                 from clusters c where cluster_id = $1"#,
            cluster_id,
            resync.as_secs_f64()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| PassCluster {
            cluster: Cluster {
                cluster_id: r.cluster_id,
                team_id: r.team_id,
                name: r.name,
                region: r.region,
                size: r.size,
                num_nodes: r.num_nodes,
                tags: r.tags,
                host: r.host,
                port: r.port,
                admin_user: r.admin_user,
                admin_password_sealed: r.admin_password_sealed,
                admin_database: r.admin_database,
                sslmode: r.sslmode,
                primary_user: r.primary_user,
                default_database: r.default_database,
                server_version_num: r.server_version_num,
                server_version: r.server_version,
                status: r.status,
                generation: r.generation,
                reconciled_generation: r.reconciled_generation,
                last_error: r.last_error,
                last_reconciled_at: r.last_reconciled_at,
                attempts: r.attempts,
                next_attempt_at: r.next_attempt_at,
                created_at: r.created_at,
                updated_at: r.updated_at,
                ca_certificate: r.ca_certificate,
                last_resync_at: r.last_resync_at,
                server_id: r.server_id,
                listing_version: None,
            },
            resync_due: r.resync_due,
            read_at: r.read_at,
            shares_server: r.shares_server,
            has_access: r.has_access,
        }))
    }

    /// Records on named rows of a cluster something a pass did or is about to do (see
    /// [`Mark`]); rows marked already are left alone.
    pub async fn mark(&self, cluster_id: Uuid, mark: Mark, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        macro_rules! set {
            ($table:literal, $flag:literal, $key:literal) => {
                sqlx::query!(
                    "update "
                        + $table
                        + " set "
                        + $flag
                        + " = true where cluster_id = $1 and "
                        + $key
                        + " = any($2) and not "
                        + $flag,
                    cluster_id,
                    names as &[&str]
                )
                .execute(&self.pool)
                .await?
            };
        }
        match mark {
            Mark::Claimed(ObjectKind::User) => set!("cluster_users", "claimed", "name"),
            Mark::Claimed(ObjectKind::Database) => set!("cluster_databases", "claimed", "name"),
            Mark::AlternateClaimed => set!("cluster_users", "alternate_claimed", "alternate_login"),
            Mark::ClosedToPublic => set!("cluster_databases", "closed_to_public", "name"),
        };
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
        macro_rules! left_out {
            ($table:literal) => {
                sqlx::query!(
                    "update "
                        + $table
                        + " t set last_error = o.message, updated_at = now()
                       from unnest($2::text[], $3::text[]) as o(name, message)
                      where t.cluster_id = $1 and t.name = o.name",
                    cluster_id,
                    &names as &[&str],
                    &messages as &[&str]
                )
                .execute(&self.pool)
                .await?
            };
        }
        match kind {
            ObjectKind::User => left_out!("cluster_users"),
            ObjectKind::Database => left_out!("cluster_databases"),
        };
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
            let (remove, advance) = (flags(|e| e.delete), flags(|e| e.advance));
            let (unclaim, not_since) = (flags(|e| e.unclaim), flags(|e| e.only_if_not_applied_since));
            let (if_current, if_moved_on) = (syncs(|e| e.sync_if_current), syncs(|e| e.sync_if_moved_on));
            macro_rules! record {
                ($table:literal) => {
                    sqlx::query!(
                        "with o as (
                           select * from unnest($2::text[], $3::int8[], $4::text[], $5::bool[], $6::bool[],
                                                $7::text[], $8::text[], $9::bool[], $10::bool[])
                                    as o(name, generation, message, remove, advance,
                                         sync_if_current, sync_if_moved_on, unclaim, only_if_not_applied_since)
                         ), dropped as (
                           delete from " + $table + " t using o
                            where t.cluster_id = $1 and t.name = o.name and o.remove
                              and t.generation = o.generation and t.state = $11
                         )
                         update " + $table + " t
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
                            and (not o.only_if_not_applied_since or t.applied_generation < o.generation)",
                        cluster_id,
                        &names as &[&str],
                        &generations,
                        &messages as &[Option<&str>],
                        &remove,
                        &advance,
                        &if_current as &[Option<&str>],
                        &if_moved_on as &[Option<&str>],
                        &unclaim,
                        &not_since,
                        DesiredState::Absent as _
                    )
                    .execute(&self.pool)
                    .await?
                };
            }
            match kind {
                ObjectKind::User => record!("cluster_users"),
                ObjectKind::Database => record!("cluster_databases"),
            };
        }
        Ok(())
    }

    /// Ends a pass over `cluster` as the pass read it (desired state at its generation). With
    /// no error, the cluster is converged up to that generation, the users that had expired
    /// (or whose rotation's grace had ended) when the pass read the cluster (`read`) have had
    /// their sessions ended, and, after a full pass, resynced, unless its registration changed
    /// meanwhile (`PUT …/pgplane` seals the admin password anew, so the sealed bytes tell): the
    /// new target still needs its full pass. With an error it is retried at `retry_at`. Either
    /// way, waiting API requests are told, in the same statement ([`Reconciled`], unseen from
    /// `read`'s time when known). Returns None if the cluster no longer exists, otherwise
    /// whether it is due again at once (its desired state changed during the pass, which
    /// succeeded).
    pub async fn finish_pass(
        &self,
        cluster: &Cluster,
        read: Option<PassRead>,
        full: bool,
        server_version: Option<(i32, &str)>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<Option<bool>> {
        let (version_num, version) = server_version.unzip();
        let (expired_by, unseen_from) = (read.map(|r| r.at), read.map(|r| r.unseen_from));
        let end = PassEnd::new(full, error, retry_at);
        let finished = sqlx::query!(
            r#"with enforced as (
               -- The few rows concerned, found through the partial indexes (not a scan of the
               -- cluster's users at every pass).
               update cluster_users u
                  set expiry_enforced_at = case when u.valid_until <= $14 then coalesce(u.expiry_enforced_at, now())
                                                else u.expiry_enforced_at end,
                      grace_until = case when u.grace_until <= $14 then null else u.grace_until end
                 from (select name from cluster_users
                        where cluster_id = $1 and valid_until <= $14 and expiry_enforced_at is null
                       union
                       select name from cluster_users where cluster_id = $1 and grace_until <= $14) due
                where u.cluster_id = $1 and u.name = due.name and $3
             ), c as (
               update clusters
                  set reconciled_generation = case when $3 then greatest(reconciled_generation, $2)
                                                   else reconciled_generation end,
                      attempts = case when $3 then 0 else attempts + 1 end,
                      next_attempt_at = coalesce($5, now()),
                      last_error = $4,
                      last_reconciled_at = now(),
                      last_resync_at = case when $6 and admin_password_sealed = $7
                                            then now() else last_resync_at end,
                      server_version_num = coalesce($8, server_version_num),
                      server_version = coalesce($9, server_version),
                      status = case
                          when exists (select 1 from cluster_users u
                                        where u.cluster_id = $1 and u.role = $11 and u.sync_status = $12)
                           and exists (select 1 from cluster_databases d
                                        where d.cluster_id = $1 and d.is_default and d.sync_status = $12)
                          then $13 else status end
                where cluster_id = $1
            returning cluster_id, generation > reconciled_generation and last_error is null as more
             )
             select more as "more!",
                    pg_notify($10, cluster_id::text
                                   || coalesce(' ' || (extract(epoch from $15::timestamptz) * 1000000)::int8, ''))::text
                      as notified
               from c"#,
            cluster.cluster_id,
            cluster.generation,
            end.succeeded,
            error,
            end.next_attempt_at,
            end.resynced,
            &cluster.admin_password_sealed,
            version_num,
            version,
            RECONCILED_CHANNEL,
            UserRole::Primary as _,
            SyncStatus::Ready as _,
            ClusterStatus::Online as _,
            expired_by,
            unseen_from
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(finished.map(|r| r.more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_pass_is_read_from_its_announcement() {
        let id = Uuid::new_v4();
        let at = DateTime::from_timestamp_micros(1_765_000_000_123_456).unwrap();
        assert_eq!(
            Reconciled::parse(&format!("{id} 1765000000123456")),
            Some(Reconciled { cluster_id: id, unseen_from: Some(at) })
        );
        assert_eq!(
            Reconciled::parse(&id.to_string()),
            Some(Reconciled { cluster_id: id, unseen_from: None })
        );
        for bad in ["", "not-a-uuid", &format!("{id} soon"), &format!("{id} ")] {
            assert_eq!(Reconciled::parse(bad), None, "{bad:?}");
        }
        let pass = Reconciled { cluster_id: id, unseen_from: Some(at) };
        assert!(pass.concerns(at - chrono::Duration::microseconds(1)));
        assert!(!pass.concerns(at), "a write that began at that time was not seen");
        assert!(Reconciled { cluster_id: id, unseen_from: None }.concerns(at));
    }
}
