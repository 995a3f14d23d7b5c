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

/// A checked query returning a [`PassClusterRow`]: `$before` (literals, joined) is followed
/// by the row's columns, read from a row of the clusters table (or of a statement's RETURNING)
/// named `c`, then by `$after`; `$resync` is the parameter holding the resync interval in
/// seconds, `$moved` an expression true when `c` holds a later generation than the
/// statement's snapshot (see [`PassCluster`]'s flags).
macro_rules! pass_cluster_query {
    ($resync:literal, $moved:literal, [$($before:literal),+], [$($after:literal),+], $($args:tt)*) => {
        sqlx::query_as!(
            PassClusterRow,
            "" $(+ $before)+ + r#"
                      c.cluster_id as "cluster_id!", c.team_id as "team_id!", c.name as "name!",
                      c.region as "region!", c.size as "size!", c.num_nodes as "num_nodes!", c.tags as "tags!",
                      c.host as "host!", c.port as "port!", c.admin_user as "admin_user!",
                      c.admin_password_sealed as "admin_password_sealed!", c.admin_database as "admin_database!",
                      c.sslmode as "sslmode!", c.primary_user as "primary_user!",
                      c.default_database as "default_database!", c.server_version_num as "server_version_num!",
                      c.server_version as "server_version!", c.status as "status!: ClusterStatus",
                      c.generation as "generation!", c.reconciled_generation as "reconciled_generation!",
                      c.last_error, c.last_reconciled_at, c.attempts as "attempts!",
                      c.next_attempt_at as "next_attempt_at!", c.created_at as "created_at!",
                      c.updated_at as "updated_at!", c.ca_certificate, c.last_resync_at, c.server_id,
                      (c.last_resync_at is null
                       or c.last_resync_at < now() - make_interval(secs => "# + $resync + r#")) as "resync_due!",
                      now() as "read_at!",
                      exists (select 1 from clusters o
                               where o.server_id = c.server_id and o.cluster_id <> c.cluster_id) as "shares_server!",
                      (exists (select 1 from cluster_user_access a where a.cluster_id = c.cluster_id)
                       or exists (select 1 from cluster_access_groups g where g.cluster_id = c.cluster_id)
                       or "# + $moved + r#")
                        as "has_access!",
                      (exists (select 1 from cluster_users u
                                where u.cluster_id = c.cluster_id
                                  and u.access_applied_generation < u.access_generation)
                       or exists (select 1 from cluster_users u
                                   where u.cluster_id = c.cluster_id and u.access_error is not null)
                       or "# + $moved + r#")
                        as "access_waits!",
                      (exists (select 1 from cluster_databases d
                                where d.cluster_id = c.cluster_id and d.applied_generation < d.generation)
                       or "# + $moved + r#")
                        as "databases_changed!"
                 "# $(+ $after)+,
            $($args)*
        )
    };
}

/// Calls `$m!($pre [<text>, $rest…], $post… $cluster, <$c's columns>, $args…)` where `<text>`
/// (literals) records outcomes on `$table`'s rows of cluster `$1` (`$2`–`$11`: the columns of
/// `$c`, an [`OutcomeColumns`]), doing to each row
/// what [`Outcome::effect`] says, against the row as it is when the statement runs (its
/// desired state may have changed since the pass read it): CTEs `o` (the outcomes), `held`
/// (the rows to write, locked in name order before any is written: those of `o`, and those
/// `$also` adds with a `union select name …`), `dropped` and `recorded` (each returning the
/// names of the rows it wrote), to be followed by `$rest` (more CTEs and the final SELECT).
/// Every writer that takes several rows of a table takes them in name order, and an object's
/// rows before its cluster's: two writers cannot each hold a row the other waits for.
macro_rules! with_outcomes_recorded {
    ($table:literal, [$($also:literal),*], $m:ident!($($pre:tt)*), [$($rest:literal),+], [$($post:tt)*], $cluster:expr, $c:ident $(, $args:expr)*) => {
        $m!($($pre)* [
            "with o as (
               -- The cluster's id on each row, as a value the planner cannot fold into a
               -- constant: a row is then found by its key, (cluster_id, name), one lookup each.
               -- Matched against `$1`, the statistics of a cluster grown since the last
               -- ANALYZE (a fresh metadata database has none) made the writes below scan all
               -- its rows, for each pass.
               select * from unnest(array_fill($1::uuid, array[coalesce(cardinality($2::text[]), 0)]),
                                    $2::text[], $3::int8[], $4::text[], $5::bool[], $6::bool[],
                                    $7::text[], $8::text[], $9::bool[], $10::bool[])
                        as o(cluster_id, name, generation, message, remove, advance,
                             sync_if_current, sync_if_moved_on, unclaim, only_if_not_applied_since)
             ), held as (
               -- One row at a time, in name order: a lookup in the primary key for each, even
               -- where the statistics take the cluster for a few rows (a scan of them all).
               select l.name
                 from unnest(array(select n.name from (select o.name from o", $($also,)* ") n
                                    order by n.name)) as n(name),
                      lateral (select t.name from ", $table, " t
                                where t.cluster_id = $1 and t.name = n.name for no key update) l
             ), dropped as (
               -- `held` counted first (a one-time condition, run before the scan): every row
               -- is locked before one is written. So in each statement that writes rows.
               delete from ", $table, " t using o
                where (t.cluster_id, t.name) = (o.cluster_id, o.name) and o.remove
                  and t.generation = o.generation and t.state = $11
                  and (select count(*) from held) >= 0
               returning t.name
             ), recorded as (
               update ", $table, " t
                  set applied_generation = case when o.advance then greatest(t.applied_generation, o.generation)
                                                else t.applied_generation end,
                      last_error = o.message,
                      sync_status = coalesce(case when t.generation = o.generation then o.sync_if_current
                                                  else o.sync_if_moved_on end,
                                             t.sync_status),
                      claimed = t.claimed and not o.unclaim,
                      updated_at = now()
                 from o
                where (t.cluster_id, t.name) = (o.cluster_id, o.name) and not o.remove
                  and (not o.only_if_not_applied_since or t.applied_generation < o.generation)
                  and (select count(*) from held) >= 0
               returning t.name
             )",
            $($rest),+
        ], $($post)*
            $cluster,
            &$c.names as &[&str],
            &$c.generations,
            &$c.messages as &[Option<&str>],
            &$c.remove,
            &$c.advance,
            &$c.if_current as &[Option<&str>],
            &$c.if_moved_on as &[Option<&str>],
            &$c.unclaim,
            &$c.not_since,
            DesiredState::Absent as _
            $(, $args)*)
    };
}

/// A checked statement of literals joined.
macro_rules! checked_statement {
    ([$($text:literal),+], $($args:tt)*) => {
        sqlx::query!("" $(+ $text)+, $($args)*)
    };
}

/// The columns of [`with_outcomes_recorded!`] for some outcomes, bound in its order.
struct OutcomeColumns<'a> {
    names: Vec<&'a str>,
    generations: Vec<i64>,
    messages: Vec<Option<&'a str>>,
    remove: Vec<bool>,
    advance: Vec<bool>,
    if_current: Vec<Option<&'static str>>,
    if_moved_on: Vec<Option<&'static str>>,
    unclaim: Vec<bool>,
    not_since: Vec<bool>,
}

impl<'a> OutcomeColumns<'a> {
    fn of(outcomes: &[&'a ObjectOutcome<'a>]) -> Self {
        let effects: Vec<_> = outcomes.iter().map(|o| o.outcome.effect()).collect();
        let flags =
            |f: fn(&crate::lifecycle::OutcomeEffect) -> bool| effects.iter().map(f).collect::<Vec<bool>>();
        let syncs = |f: fn(&crate::lifecycle::OutcomeEffect) -> Option<SyncStatus>| {
            effects.iter().map(|e| f(e).map(SyncStatus::as_str)).collect::<Vec<Option<&str>>>()
        };
        OutcomeColumns {
            names: outcomes.iter().map(|o| o.name).collect(),
            generations: outcomes.iter().map(|o| o.generation).collect(),
            messages: outcomes.iter().map(|o| o.outcome.message()).collect(),
            remove: flags(|e| e.delete),
            advance: flags(|e| e.advance),
            if_current: syncs(|e| e.sync_if_current),
            if_moved_on: syncs(|e| e.sync_if_moved_on),
            unclaim: flags(|e| e.unclaim),
            not_since: flags(|e| e.only_if_not_applied_since),
        }
    }
}

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
    /// A user's access levels wait to be carried out (or failed): without it, a pass that is
    /// not a resync does not read them (`Store::pending_access`). Read with `generation`: a
    /// change committed later bumps it, and another pass sees to it.
    pub access_waits: bool,
    /// A database's desired state is not applied yet: without it, a pass that is not a resync
    /// reads no databases (as `access_waits`).
    pub databases_changed: bool,
    // The three flags are read in the statement's snapshot, `generation` from the row itself.
    // A pass's end returns the row it updated, which a write committed after that snapshot
    // (whose bump the update waited for) leaves with a later generation than the snapshot's,
    // and the flags blind to the write: they are then true, so that the pass that records that
    // generation reads what the write may have changed.
}

/// A [`PassCluster`] as [`pass_cluster_query!`] reads it.
struct PassClusterRow {
    /// Ending a pass: another is due at once (false when the cluster is read to start one).
    more: bool,
    /// Ending a pass: what announced it (unused).
    #[allow(dead_code)]
    notified: Option<String>,
    cluster_id: Uuid,
    team_id: Uuid,
    name: String,
    region: String,
    size: String,
    num_nodes: i32,
    tags: Vec<String>,
    host: String,
    port: i32,
    admin_user: String,
    admin_password_sealed: Vec<u8>,
    admin_database: String,
    sslmode: String,
    primary_user: String,
    default_database: String,
    server_version_num: i32,
    server_version: String,
    status: ClusterStatus,
    generation: i64,
    reconciled_generation: i64,
    last_error: Option<String>,
    last_reconciled_at: Option<DateTime<Utc>>,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ca_certificate: Option<String>,
    last_resync_at: Option<DateTime<Utc>>,
    server_id: Option<String>,
    resync_due: bool,
    read_at: DateTime<Utc>,
    shares_server: bool,
    has_access: bool,
    access_waits: bool,
    databases_changed: bool,
}

impl From<PassClusterRow> for PassCluster {
    fn from(r: PassClusterRow) -> Self {
        PassCluster {
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
            access_waits: r.access_waits,
            databases_changed: r.databases_changed,
        }
    }
}

/// How a pass ended in the store ([`Store::finish_pass`]).
#[derive(Debug)]
pub enum Finished {
    /// The cluster no longer exists.
    Gone,
    /// Nothing more until the next change, retry or resync.
    Rest,
    /// Its desired state changed during the pass, which succeeded: the next pass is due at
    /// once, and starts from the cluster as the end of this one left it (its generation read
    /// after every write that changed it had committed, like [`Store::cluster_for_pass`]; its
    /// flags as [`PassCluster`] says).
    Again(Box<PassCluster>),
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
        let row = pass_cluster_query!(
            "$2",
            "false",
            [r#"select false as "more!", null::text as notified,"#],
            ["from clusters c where c.cluster_id = $1"],
            cluster_id,
            resync.as_secs_f64()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(PassCluster::from))
    }

    /// Records on named rows of a cluster something a pass did or is about to do (see
    /// [`Mark`]); rows marked already are left alone. The rows are locked by name first, the
    /// order of every writer (ARCHITECTURE.md).
    pub async fn mark(&self, cluster_id: Uuid, mark: Mark, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        // `$held` locks the rows to mark, in name order: by name, the sorted names drive one
        // key lookup each (where statistics that take the cluster for a few rows made
        // `name = any($2)` a scan of all its rows); by alternate login, the rows found sorted
        // by name.
        macro_rules! set {
            ($table:literal, $flag:literal, [$($held:tt)+]) => {
                sqlx::query!(
                    "with held as (" + $($held)+ + ")
                       update "
                        + $table
                        + " t set "
                        + $flag
                        + " = true from held h where t.cluster_id = $1 and t.name = h.name and not t."
                        + $flag
                        + " and (select count(*) from held) >= 0",
                    cluster_id,
                    names as &[&str]
                )
                .execute(&self.pool)
                .await?
            };
            ($table:literal, $flag:literal) => {
                set!(
                    $table,
                    $flag,
                    ["select l.name from (select k.name from unnest($2::text[]) as k(name) order by k.name) k,
                            lateral (select t.name from "
                        + $table
                        + " t where t.cluster_id = $1 and t.name = k.name and not t."
                        + $flag
                        + " for no key update) l"]
                )
            };
        }
        match mark {
            Mark::Claimed(ObjectKind::User) => set!("cluster_users", "claimed"),
            Mark::Claimed(ObjectKind::Database) => set!("cluster_databases", "claimed"),
            Mark::AlternateClaimed => set!(
                "cluster_users",
                "alternate_claimed",
                ["select name from cluster_users where cluster_id = $1 and alternate_login = any($2)
                     and not alternate_claimed order by name for no key update"]
            ),
            Mark::ClosedToPublic => set!("cluster_databases", "closed_to_public"),
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
                // The rows locked by name first, the order of every writer (ARCHITECTURE.md).
                sqlx::query!(
                    "with held as (select name from "
                        + $table
                        + " where cluster_id = $1 and name = any($2) order by name for no key update)
                       update "
                        + $table
                        + " t set last_error = o.message, updated_at = now()
                       from unnest($2::text[], $3::text[]) as o(name, message)
                      where t.cluster_id = $1 and t.name = o.name and (select count(*) from held) >= 0",
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
            let c = OutcomeColumns::of(&of_kind);
            macro_rules! record {
                ($table:literal) => {
                    with_outcomes_recorded!(
                        $table,
                        [],
                        checked_statement!(),
                        [" select 1 as done"],
                        [],
                        cluster_id,
                        c
                    )
                    .fetch_one(&self.pool)
                    .await
                    .map(drop)?
                };
            }
            match kind {
                ObjectKind::User => record!("cluster_users"),
                ObjectKind::Database => record!("cluster_databases"),
            };
        }
        Ok(())
    }

    /// Ends a pass over `cluster` as the pass read it (desired state at its generation), first
    /// recording its last `outcomes` (users only, in the same statement, as
    /// [`Store::record_outcomes`] would). With no error, the cluster is converged up to that
    /// generation, the users that had expired (or whose rotation's grace had ended) when the
    /// pass read the cluster (`read`) have had their sessions ended (but those among
    /// `outcomes`, whose rows this statement records: the next pass sees to them), and, after
    /// a full pass, resynced, unless its registration changed meanwhile (`PUT …/pgplane` seals
    /// the admin password anew, so the sealed bytes tell): the new target still needs its full
    /// pass. With an error it is retried at `retry_at`. Either way, waiting API requests are
    /// told, in the same statement ([`Reconciled`], unseen from `read`'s time when known).
    /// The cluster's status is judged on its rows as they were before `outcomes`: the pass
    /// records the primary user's and the default database's outcomes before its end. The
    /// users' rows are locked in name order and written before the cluster's (its conditions
    /// count them), the order of every writer (see [`with_outcomes_recorded!`]): the reverse
    /// deadlocked with requests that change access levels.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_pass(
        &self,
        cluster: &Cluster,
        outcomes: &[ObjectOutcome<'_>],
        read: Option<PassRead>,
        full: bool,
        server_version: Option<(i32, &str)>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
        resync: Duration,
    ) -> Result<Finished> {
        debug_assert!(outcomes.iter().all(|o| o.kind == ObjectKind::User));
        let users: Vec<&ObjectOutcome<'_>> = outcomes.iter().collect();
        let c = OutcomeColumns::of(&users);
        let (version_num, version) = server_version.unzip();
        let (expired_by, unseen_from) = (read.map(|r| r.at), read.map(|r| r.unseen_from));
        let end = PassEnd::new(full, error, retry_at);
        let finished = with_outcomes_recorded!(
            "cluster_users",
            // The users due for enforcement, held with the others: the few rows concerned,
            // found through the partial indexes (not a scan of the cluster's users at every
            // pass). `<= now()` adds nothing ($24 was read before it) but what the planner can
            // estimate: a plan made once for every pass (not one per pass, which cost more than
            // running it) knows only $24's type, and it took a third of the cluster's users for
            // due.
            [
                r#"
                      union select name from cluster_users
                             where cluster_id = $1 and $13 and valid_until <= $24 and valid_until <= now()
                               and expiry_enforced_at is null
                      union select name from cluster_users
                             where cluster_id = $1 and $13 and grace_until <= $24 and grace_until <= now()"#
            ],
            pass_cluster_query!("$26", "m.moved",),
            [
                r#", enforced as (
               -- Not those recorded above; rechecked on the row as it is once held.
               update cluster_users u
                  set expiry_enforced_at = case when u.valid_until <= $24 then coalesce(u.expiry_enforced_at, now())
                                                else u.expiry_enforced_at end,
                      grace_until = case when u.grace_until <= $24 then null else u.grace_until end
                 from held h
                where u.cluster_id = $1 and u.name = h.name and $13
                  and ((u.valid_until <= $24 and u.expiry_enforced_at is null) or u.grace_until <= $24)
                  and not exists (select 1 from o where o.name = u.name)
                  and (select count(*) from held) >= 0
               returning u.name
             ), c as (
               update clusters
                  set reconciled_generation = case when $13 then greatest(reconciled_generation, $12)
                                                   else reconciled_generation end,
                      attempts = case when $13 then 0 else attempts + 1 end,
                      next_attempt_at = coalesce($15, now()),
                      last_error = $14,
                      last_reconciled_at = now(),
                      last_resync_at = case when $16 and admin_password_sealed = $17
                                            then now() else last_resync_at end,
                      server_version_num = coalesce($18, server_version_num),
                      server_version = coalesce($19, server_version),
                      status = case
                          when exists (select 1 from cluster_users u
                                        where u.cluster_id = $1 and u.name = primary_user
                                          and u.role = $21 and u.sync_status = $22)
                           and exists (select 1 from cluster_databases d
                                        where d.cluster_id = $1 and d.is_default and d.sync_status = $22)
                          then $23 else status end
                -- After the users' rows above are written (the conditions run those statements
                -- first): an object's rows before its cluster's, as every writer takes them.
                where cluster_id = $1
                  and (select count(*) from dropped) + (select count(*) from recorded)
                      + (select count(*) from enforced) >= 0
            returning *, generation > reconciled_generation and last_error is null as more,
                      pg_notify($20, cluster_id::text
                                     || coalesce(' ' || (extract(epoch from $25::timestamptz) * 1000000)::int8, ''))::text
                        as notified
             )
             select c.more as "more!", c.notified,"#
            ],
            [[
                "from c, lateral (select c.generation <> s.generation as moved
                                    from clusters s where s.cluster_id = c.cluster_id) m"
            ],],
            cluster.cluster_id,
            c,
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
            unseen_from,
            resync.as_secs_f64()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match finished {
            None => Finished::Gone,
            Some(row) if row.more => Finished::Again(Box::new(row.into())),
            Some(_) => Finished::Rest,
        })
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
