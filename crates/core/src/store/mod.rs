//! The metadata store: pgplane's own PostgreSQL database, reached only through sqlx. The
//! queries of this module tree are checked at compile time (sqlx's `query!` macros) against
//! the query data committed in `.sqlx/` (`deploy/dev/sqlx-prepare.sh` writes it; `make lint`
//! checks it is current), so a renamed column fails the build. Lifecycle states are bound as
//! the enums of `crate::lifecycle`, never written in the SQL. Writes that change a cluster's
//! desired state bump the cluster's generation and wake the reconcilers in the same
//! transaction (see `lifecycle::cluster`): its users' and databases' writes at commit, by a
//! trigger (see [`changed_rows!`]).

/// A write to one of a cluster's users or databases, in one checked statement, its changed
/// rows returned as a `User` or a `Database` (`returning *`; `NewUser` for an insert, a `User`
/// whose parameters are not read), or as [`Written`] (`returning generation, updated_at`).
/// `change` (literals, joined) is a data-modifying statement with RETURNING whose `$1` is the
/// cluster id. The write does not touch the cluster's row: when it
/// inserts an object or raises its generation, the transaction's commit bumps the cluster's
/// generation (see `lifecycle::cluster`: a new generation, a pass due at once, any backoff
/// over) and wakes the reconcilers (a commit-time trigger, migration `commit_time_bump`), so
/// the cluster's row is locked only while the transaction commits.
macro_rules! changed_rows {
    (User, $change:tt, $($args:tt)*) => {
        changed_rows!(@user $change, "coalesce(p.parameters, '[]')",
            "left join (select user_name, jsonb_agg(jsonb_build_object('name', name, 'value', value, 'database', database_name)
                                               order by database_name nulls first, name) as parameters
                          from cluster_user_parameters where cluster_id = $1 group by user_name) p on p.user_name = changed.name",
            $($args)*)
    };
    // New users: the statement's snapshot cannot see parameters it inserts (the caller fills
    // them in), so none is read.
    (NewUser, $change:tt, $($args:tt)*) => {
        changed_rows!(@user $change, "'[]'::jsonb", "", $($args)*)
    };
    (@user $change:tt, $parameters:literal, $join:literal, $($args:tt)*) => {
        changed_rows!(@query crate::model::User, $change,
            [r#"cluster_id as "cluster_id!", name as "name!", role as "role!: UserRole",
               credentials_sealed as "credentials_sealed!", allow_replication as "allow_replication!",
               connection_limit as "connection_limit!", "#, $parameters, r#" as "parameters!: crate::model::Parameters",
               state as "state!: DesiredState", generation as "generation!",
               applied_generation as "applied_generation!", sync_status as "sync_status!: SyncStatus",
               last_error, claimed as "claimed!", created_at as "created_at!",
               updated_at as "updated_at!", reassign_to, valid_until, expiry_enforced_at, lease_seconds,
               alternate_login, alternate_claimed as "alternate_claimed!", alternate_active as "alternate_active!",
               other_credentials_sealed, grace_until, access_generation as "access_generation!""#],
            $join,
            $($args)*)
    };
    (Database, $change:tt, $($args:tt)*) => {
        changed_rows!(@query crate::model::Database, $change,
            [r#"cluster_id as "cluster_id!", name as "name!", is_default as "is_default!",
               state as "state!: DesiredState", generation as "generation!",
               applied_generation as "applied_generation!", sync_status as "sync_status!: SyncStatus",
               last_error, claimed as "claimed!", created_at as "created_at!", updated_at as "updated_at!""#],
            "",
            $($args)*)
    };
    (written, $change:tt, $($args:tt)*) => {
        changed_rows!(@query crate::store::Written, $change,
            [r#"generation as "generation!", updated_at as "updated_at!""#],
            "",
            $($args)*)
    };
    (@query $out:path, [$($change:literal),+], [$($select:literal),+], $join:literal, $($args:tt)*) => {
        sqlx::query_as!(
            $out,
            "with changed as (" $(+ $change)+ + ") select " $(+ $select)+ + " from changed " + $join,
            $($args)*
        )
    };
}

/// A checked query that reads rows of a model type, its columns listed once here: `rest` (one
/// or more literals, joined) follows `select <columns> from <table>`. A user's parameters come
/// from a join grouped once per query (a function or subquery per row cost 1.3 and 0.4 ms per
/// 300 users), so `User` queries bind the cluster id as `$1`, as every one does.
///
/// `User named [names]` and `AccessProgress named [names]` read the cluster's users that a
/// query (`names`, binding the cluster id as `$1`) names, one lookup in the primary key for
/// each: where the statistics take the cluster for a few rows (a fresh metadata database),
/// `name = any(…)` was planned as a scan of all of them, and a plain join too (`offset 0`
/// keeps the lookups apart).
macro_rules! select_rows {
    ($kind:ident named [$($names:literal),+], [$($rest:literal),+], $($args:tt)*) => {
        select_rows!($kind from [
            "(select t.* from unnest(array(", $($names,)+ ")) as n(name),
                  lateral (select * from cluster_users t
                            where t.cluster_id = $1 and t.name = n.name offset 0) t) cluster_users"
        ], [$($rest),+], $($args)*)
    };
    (Cluster, [$($rest:literal),+], $($args:tt)*) => {
        sqlx::query_as!(
            crate::model::Cluster,
            r#"select cluster_id, team_id, name, region, size, num_nodes, tags, host, port, admin_user,
                      admin_password_sealed, admin_database, sslmode, primary_user, default_database,
                      server_version_num, server_version, status as "status: ClusterStatus", generation,
                      reconciled_generation, last_error, last_reconciled_at, attempts, next_attempt_at,
                      created_at, updated_at, ca_certificate, last_resync_at, server_id,
                      (select version from cluster_listing_versions v
                        where v.cluster_id = clusters.cluster_id) as listing_version
                 from clusters "# $(+ $rest)+,
            $($args)*
        )
    };
    (User, [$($rest:literal),+], $($args:tt)*) => {
        select_rows!(User from ["cluster_users"], [$($rest),+], $($args)*)
    };
    (User from [$($from:literal),+], [$($rest:literal),+], $($args:tt)*) => {
        sqlx::query_as!(
            crate::model::User,
            r#"select cluster_id, name, role as "role: UserRole", credentials_sealed, allow_replication,
                      connection_limit,
                      coalesce(p.parameters, '[]') as "parameters!: crate::model::Parameters",
                      state as "state: DesiredState", generation, applied_generation,
                      sync_status as "sync_status: SyncStatus", last_error, claimed, created_at, updated_at,
                      reassign_to, valid_until, expiry_enforced_at, lease_seconds, alternate_login,
                      alternate_claimed, alternate_active, other_credentials_sealed, grace_until,
                      access_generation
                 from "# $(+ $from)+ + r#"
                 left join (select user_name, jsonb_agg(jsonb_build_object('name', name, 'value', value, 'database', database_name)
                                                        order by database_name nulls first, name) as parameters
                              from cluster_user_parameters where cluster_id = $1 group by user_name) p on p.user_name = cluster_users.name "# $(+ $rest)+,
            $($args)*
        )
    };
    (Database, [$($rest:literal),+], $($args:tt)*) => {
        sqlx::query_as!(
            crate::model::Database,
            r#"select cluster_id, name, is_default, state as "state: DesiredState", generation,
                      applied_generation, sync_status as "sync_status: SyncStatus", last_error, claimed,
                      created_at, updated_at
                 from cluster_databases "# $(+ $rest)+,
            $($args)*
        )
    };
    (AccessProgress, [$($rest:literal),+], $($args:tt)*) => {
        select_rows!(AccessProgress from ["cluster_users"], [$($rest),+], $($args)*)
    };
    (AccessProgress from [$($from:literal),+], [$($rest:literal),+], $($args:tt)*) => {
        sqlx::query_as!(
            crate::model::AccessProgress,
            "select name, access_generation, access_applied_generation, access_error, updated_at
               from " $(+ $from)+ + " " $(+ $rest)+,
            $($args)*
        )
    };
}

mod access;
mod audit;
mod batches;
mod clusters;
mod drift;
mod firewall;
mod limits;
mod lock;
mod objects;
mod pools;
mod reconcile;
mod retention;
mod rights;
mod rotation;
mod tokens;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::Result;
use crate::lifecycle::ObjectKind;
use crate::notifications::Notifications;

pub use access::{AccessForPass, RecordedGroup, UNRECORDED_OID};
pub use audit::NewAuditEvent;
pub use batches::let_those_woken_with_it_run;
pub use clusters::{AdminConnection, NewCluster, TargetUpdate};
pub use firewall::NewFirewallRule;
pub use lock::ClusterLock;
pub use objects::{Heir, ObjectCounts};
pub use pools::{
    PoolReport, PoolerRegistration, ServedCluster, ServedPool, POOLER_LEASE_SECS, POOLS_CHANNEL,
};
pub use reconcile::{DueCluster, Finished, Mark, ObjectOutcome, PassCluster, PassRead, Reconciled};
pub use retention::EventLog;
pub use rights::SharedRights;
pub use rotation::Rotation;

/// The schema migrations in the top-level `migrations/` folder, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Channel on which writers wake reconcilers; the payload is the cluster id.
pub const WAKE_CHANNEL: &str = "pgplane_wake";
/// Channel on which reconcilers announce a finished pass; the payload is a [`Reconciled`].
pub const RECONCILED_CHANNEL: &str = "pgplane_reconciled";
/// Channel on which token revocations are announced; the payload is the token id.
pub const TOKENS_CHANNEL: &str = "pgplane_tokens";

/// An object's generation after a write, and when the row was written (by the metadata
/// database's clock, which waits compare it with).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub generation: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// How long a metadata session may sit idle in the pool before it is checked with a round
/// trip as it is handed out (see [`Store::connect_lazy`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Handle to the metadata database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// The process's notification session, started on first use and shared by every clone.
    notifications: Arc<OnceLock<Arc<Notifications>>>,
    /// User deletions waiting to be written together, shared by every clone.
    deletions: Arc<batches::Batches<objects::Deletion>>,
    /// New users waiting to be written together, shared by every clone.
    creations: Arc<batches::Batches<objects::Creation>>,
    /// Password resets waiting to be written together, shared by every clone.
    resets: Arc<batches::Batches<objects::Reset>>,
    /// Reads of single users waiting to be done together, shared by every clone.
    readings: Arc<batches::Batches<objects::Reading>>,
}

impl Store {
    /// Opens a pool to the metadata database at `url` (a postgres:// URL) without connecting
    /// yet, so that pgplane can start, and report not-ready, while the database is down.
    ///
    /// A session that comes back to the pool is handed out again without a check, unless it
    /// has been idle for [`PING_IF_IDLE_FOR`]: sqlx's default pings every session before every
    /// query, a second round trip for each one. A session found dead by the ping is closed and
    /// another taken; the metadata database going away for less than that is noticed by the
    /// query itself, which fails as it would have a moment later.
    ///
    /// Every session keeps one plan per statement (`plan_cache_mode`), made at its first run.
    /// PostgreSQL plans a prepared statement's first five runs for their parameters on each
    /// session, and goes on doing so wherever such plans look cheaper than one for any
    /// parameters. With a pool of dozens of sessions most runs of pgplane's writes were planned
    /// anew (the statement that ends a pass, the deletion function's), and planning cost as much
    /// as running them: a fifth of the metadata database's time per user written. Its
    /// statements find rows by key, and those that reach partial indexes say so without
    /// parameters, so one plan serves every run.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|session, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(session).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(
                options
                    .application_name(crate::instance::name())
                    .options([("plan_cache_mode", "force_generic_plan")]),
            );
        Ok(Self {
            pool,
            notifications: Arc::default(),
            deletions: Arc::default(),
            creations: Arc::default(),
            resets: Arc::default(),
            readings: Arc::default(),
        })
    }

    /// The notifications of the metadata database (one LISTEN session however many parts
    /// subscribe; started on first use, inside a Tokio runtime).
    pub fn notifications(&self) -> Arc<Notifications> {
        self.notifications.get_or_init(|| Notifications::start(self.pool.clone())).clone()
    }

    /// The underlying pool (for LISTEN connections and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            other => crate::Error::Db(sqlx::Error::Migrate(Box::new(other))),
        })
    }

    /// Checks that the metadata database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query!("select 1 as one").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Looks a team up by name.
    pub async fn team_id_by_name(&self, name: &str) -> Result<Option<Uuid>> {
        Ok(sqlx::query_scalar!("select team_id from teams where name = $1", name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Creates a team if it does not exist; returns its id.
    pub async fn ensure_team(&self, name: &str) -> Result<Uuid> {
        Ok(sqlx::query_scalar!(
            "insert into teams (team_id, name) values ($1, $2)
             on conflict (name) do update set name = excluded.name
             returning team_id",
            Uuid::new_v4(),
            name
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// The unique key that keeps two clusters on one server from managing the same name.
const SERVER_NAMES_KEY: &str = "server_names_pkey";

/// A write that would make two clusters on one server manage the same name becomes a 409 with
/// `message`; other errors stay as they are.
fn names_clash(e: sqlx::Error, message: impl FnOnce() -> String) -> crate::Error {
    match e {
        sqlx::Error::Database(d) if d.constraint() == Some(SERVER_NAMES_KEY) => {
            crate::Error::Conflict(message())
        }
        other => other.into(),
    }
}

/// The error for a write of an object whose name another cluster on the same server manages.
fn taken_on_server(e: sqlx::Error, kind: ObjectKind, name: &str) -> crate::Error {
    names_clash(e, || {
        format!("a {} named {name:?} is managed by another cluster on the same server", kind.noun())
    })
}

/// Queues a notification on `channel`, delivered when `tx` commits.
async fn notify(tx: &mut Transaction<'_, Postgres>, channel: &str, cluster_id: Uuid) -> Result<()> {
    sqlx::query!("select pg_notify($1, $2) as notified", channel, cluster_id.to_string())
        .fetch_one(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commit-time bump (a trigger, migration `commit_time_bump`) names the wake channel
    /// in SQL: it must be the one the reconcilers listen on.
    #[test]
    fn the_commit_time_bump_wakes_on_the_channel_reconcilers_listen_on() {
        let migration = include_str!("../../../../migrations/20261206000020_commit_time_bump.sql");
        assert!(migration.contains(&format!("pg_notify('{WAKE_CHANNEL}', new.cluster_id::text)")));
    }
}
