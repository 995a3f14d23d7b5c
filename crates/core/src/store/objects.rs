//! Rows of the objects pgplane manages on a cluster: users (roles) and databases. Both kinds
//! share the desired-state columns (state, generation, sync_status, claimed) and follow the
//! lifecycle of `lifecycle::objects`; a query that is the same for both is written once per
//! table (checked queries name their table) and chosen by [`ObjectKind`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::batches::Batched;
use super::{taken_on_server, Store};
use crate::access::AccessLevel;
use crate::error::{Error, Result};
use crate::lifecycle::{DesiredState, ObjectKind, SyncStatus, UserRole};
use crate::model::{AccessProgress, Database, SettingsChange, User, UserSettings};
use crate::parameters::RoleParameter;

/// How many objects, over every cluster, are waiting to be applied, carry an error, or are in
/// conflict with a same-named object pgplane does not own (for the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    pub pending: i64,
    pub failed: i64,
    pub conflict: i64,
}

/// Who inherits what a deleted user owns.
#[derive(Debug, Clone, Copy)]
pub enum Heir<'a> {
    /// Named by the request (None: the primary user).
    Named(Option<&'a str>),
    /// The one recorded with the user (a lease's, given at its creation; None: the primary
    /// user).
    Stored,
}

/// Parameters as the columns an insert unnests: names, values, databases.
fn parameter_columns<'a>(
    parameters: impl IntoIterator<Item = &'a RoleParameter>,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<Option<&'a str>>) {
    let (mut names, mut values, mut databases) = (Vec::new(), Vec::new(), Vec::new());
    for p in parameters {
        names.push(p.name.as_str());
        values.push(p.value.as_str());
        databases.push(p.database.as_deref());
    }
    (names, values, databases)
}

/// Of the databases `names`, those that are present databases of the cluster, their keys held
/// until the transaction ends (in name order): a database's deletion request locks its row for
/// update, so that a row naming the database written under this hold is either committed
/// before the request (which then removes it) or refused after it, never left naming a
/// database being deleted.
pub(super) async fn hold_present_databases(
    tx: &mut sqlx::PgConnection,
    cluster_id: Uuid,
    names: &[&str],
) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar!(
        "select name from cluster_databases where cluster_id = $1 and name = any($2) and state = $3
          order by name for key share",
        cluster_id,
        names as &[&str],
        DesiredState::Present as _
    )
    .fetch_all(&mut *tx)
    .await?)
}

/// The route's check of `parameters` (`check_parameters`) against the cluster's databases
/// `present` as they are now: a database whose deletion was asked since is refused (422).
fn check_parameters_against(parameters: &[RoleParameter], present: &[String]) -> Result<()> {
    let present: Vec<&str> = present.iter().map(String::as_str).collect();
    crate::parameters::check_parameters(parameters, &present).map(drop).map_err(Error::Invalid)
}

/// Replaces a user's parameters with `parameters` (checked by the caller; checked again here,
/// under a hold of their databases, for a database whose deletion was asked since: 422).
async fn replace_parameters(
    tx: &mut sqlx::PgConnection,
    cluster_id: Uuid,
    user: &str,
    parameters: &[RoleParameter],
) -> Result<()> {
    let named: Vec<&str> = parameters.iter().filter_map(|p| p.database.as_deref()).collect();
    check_parameters_against(parameters, &hold_present_databases(&mut *tx, cluster_id, &named).await?)?;
    sqlx::query!(
        "delete from cluster_user_parameters where cluster_id = $1 and user_name = $2",
        cluster_id,
        user
    )
    .execute(&mut *tx)
    .await?;
    let (names, values, databases) = parameter_columns(parameters);
    sqlx::query!(
        "insert into cluster_user_parameters (cluster_id, user_name, name, value, database_name)
         select $1, $2, p.name, p.value, p.database_name
           from unnest($3::text[], $4::text[], $5::text[]) as p(name, value, database_name)",
        cluster_id,
        user,
        &names as &[&str],
        &values as &[&str],
        &databases as &[Option<&str>]
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A cluster's objects of one kind (`User` or `Database`) by name, read (a future): `all`
/// of them, or `changed`, only those whose desired state has not been applied yet (through the
/// partial index on them, not a scan of the cluster's objects).
macro_rules! of_cluster {
    ($kind:ident, $pool:expr, $cluster_id:expr, all) => {
        of_cluster!(@one_connection $pool, select_rows!($kind, ["where cluster_id = $1 order by name"], $cluster_id))
    };
    ($kind:ident, $pool:expr, $cluster_id:expr, changed) => {
        of_cluster!(@one_connection $pool, select_rows!(
            $kind,
            ["where cluster_id = $1 and applied_generation < generation order by name"],
            $cluster_id
        ))
    };
    // Read on a connection taken from the pool rather than through the pool: each row then
    // passes one stream, not two (a listing yields a row per user).
    (@one_connection $pool:expr, $query:expr) => {
        async {
            let mut conn = $pool.acquire().await?;
            $query.fetch_all(&mut *conn).await
        }
    };
}

impl Store {
    /// Counts of unsettled objects of one kind, over every cluster: in conflict; else failed
    /// (carrying an error); else pending (desired state not yet applied).
    pub async fn object_counts(&self, kind: ObjectKind) -> Result<ObjectCounts> {
        let (conflict, pending) = (SyncStatus::Conflict, SyncStatus::Pending);
        macro_rules! counts {
            ($table:literal) => {{
                let r = sqlx::query!(
                    r#"select count(*) filter (where sync_status = $1) as "conflict!",
                              count(*) filter (where sync_status <> $1 and last_error is not null) as "failed!",
                              count(*) filter (where sync_status <> $1 and last_error is null
                                               and (sync_status = $2 or applied_generation < generation)) as "pending!"
                       from "# + $table,
                    conflict as _,
                    pending as _
                )
                .fetch_one(&self.pool)
                .await?;
                (r.conflict, r.failed, r.pending)
            }};
        }
        let (conflict, failed, pending) = match kind {
            ObjectKind::User => counts!("cluster_users"),
            ObjectKind::Database => counts!("cluster_databases"),
        };
        Ok(ObjectCounts { pending, failed, conflict })
    }

    /// A cluster's users, by name.
    pub async fn list_users(&self, cluster_id: Uuid) -> Result<Vec<User>> {
        Ok(of_cluster!(User, &self.pool, cluster_id, all).await?)
    }

    /// A cluster's users and databases, read at the same time.
    pub async fn cluster_objects(&self, cluster_id: Uuid) -> Result<(Vec<User>, Vec<Database>)> {
        let users = of_cluster!(User, &self.pool, cluster_id, all);
        Ok(tokio::try_join!(users, of_cluster!(Database, &self.pool, cluster_id, all))?)
    }

    /// What a pass woken by a write, an expiry or the end of a grace reads: the users whose
    /// desired state has not been applied yet, whose expiry is still to be enforced or whose
    /// rotation's grace has ended, and the databases whose desired state has not been applied
    /// yet (when `databases` says there may be some: else none are read).
    pub async fn changed_objects(
        &self,
        cluster_id: Uuid,
        databases: bool,
    ) -> Result<(Vec<User>, Vec<Database>)> {
        // Each condition has a partial index, read on its own (their OR was planned as a scan
        // of every user of the cluster at every pass); then the rows of the names found, one
        // lookup each.
        let users = select_rows!(
            User named [
                "select name from cluster_users where cluster_id = $1 and applied_generation < generation
                 union
                 select name from cluster_users
                  where cluster_id = $1 and valid_until <= now() and expiry_enforced_at is null
                 union
                 select name from cluster_users where cluster_id = $1 and grace_until <= now()"
            ],
            ["order by name"],
            cluster_id
        )
        .fetch_all(&self.pool);
        if !databases {
            return Ok((users.await?, Vec::new()));
        }
        Ok(tokio::try_join!(users, of_cluster!(Database, &self.pool, cluster_id, changed))?)
    }

    /// Moves a lease's end to `seconds` (None: its own lifetime) from now, and makes that its
    /// lifetime; the reconciler applies the new `VALID UNTIL`. A user that is not a present
    /// lease is refused.
    pub async fn renew_lease(&self, cluster_id: Uuid, name: &str, seconds: Option<i32>) -> Result<User> {
        let user: Option<User> = changed_rows!(
            User,
            ["update cluster_users
                    set lease_seconds = coalesce($3, lease_seconds),
                        valid_until = now() + make_interval(secs => coalesce($3, lease_seconds)),
                        expiry_enforced_at = null,
                        generation = generation + 1, updated_at = now(),
                        sync_status = case when sync_status = $4 then $4 else $5 end
                  where cluster_id = $1 and name = $2 and state = $6 and lease_seconds is not null
              returning *"],
            cluster_id,
            name,
            seconds,
            SyncStatus::KEPT_BY_WRITE as _,
            SyncStatus::Ready.after_write() as _,
            DesiredState::Present as _,
        )
        .fetch_optional(&self.pool)
        .await?;
        match user {
            Some(user) => Ok(user),
            None => Err(match self.get_user(cluster_id, name).await? {
                u if u.state != DesiredState::Present => being_deleted(ObjectKind::User, name),
                _ => Error::Invalid(format!("user {name:?} is not a lease: only a lease is renewed")),
            }),
        }
    }

    /// Requests the deletion of every lease, on every cluster, whose end has come (what it
    /// owns goes to its heir, recorded at its creation), in one statement; its commit bumps and
    /// wakes their clusters. Returns how many ended. The leases and their heirs are locked by
    /// cluster and name first (every writer's order: a pass's end locks the expired ones of its
    /// cluster by name too). Holding the heirs, the end judges them as they are: a deletion of
    /// an heir that comes meanwhile waits, then sees the lease that names it (and is refused);
    /// an heir whose deletion was requested before, or that is a lease ending too, cannot
    /// inherit, and the primary user does.
    pub async fn end_leases(&self) -> Result<u64> {
        let ended = sqlx::query!(
            "with due as (
               select cluster_id, name, reassign_to from cluster_users
                where lease_seconds is not null and valid_until <= now() and state = $2
             ), keys as (
               select array_agg(k.cluster_id order by k.cluster_id, k.name) as clusters,
                      array_agg(k.name order by k.cluster_id, k.name) as names
                 from (select cluster_id, name from due
                       union select cluster_id, reassign_to from due where reassign_to is not null) k
             ), held as (
               -- One row at a time, in that order: a lookup in the primary key for each. Each
               -- is judged as it is once held (no one can change it before the commit).
               select l.cluster_id, l.name, l.state, l.ending
                 from keys, unnest(keys.clusters, keys.names) as k(cluster_id, name),
                      lateral (select t.cluster_id, t.name, t.state,
                                      t.state = $2 and t.lease_seconds is not null
                                        and t.valid_until <= now() as ending
                                 from cluster_users t
                                where t.cluster_id = k.cluster_id and t.name = k.name
                                  for no key update) l
             )
             -- Driven by `held` (the rows to write are among its few), not by the leases'
             -- index, which stale statistics would have the planner join to it row by row.
             update cluster_users u
                set state = $1, generation = u.generation + 1, updated_at = now(),
                    -- An heir being deleted, or ending now too, cannot inherit.
                    reassign_to = case when exists (select 1 from held x
                                                     where x.cluster_id = u.cluster_id
                                                       and x.name = u.reassign_to
                                                       and x.state = $2 and not x.ending)
                                       then u.reassign_to end
               from held h
              where u.cluster_id = h.cluster_id and u.name = h.name and h.ending",
            DesiredState::Absent as _,
            DesiredState::Present as _,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(ended)
    }

    /// How many present users have expired, and how many expire within `window`, over every
    /// cluster (for the metrics).
    pub async fn expiry_counts(&self, window: std::time::Duration) -> Result<(i64, i64)> {
        let r = sqlx::query!(
            r#"select count(*) filter (where valid_until <= now()) as "expired!",
                      count(*) filter (where valid_until > now()
                                         and valid_until <= now() + make_interval(secs => $1)) as "expiring!"
                 from cluster_users where valid_until is not null and state = $2"#,
            window.as_secs_f64(),
            DesiredState::Present as _
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.expired, r.expiring))
    }

    /// One user of a cluster.
    pub async fn get_user(&self, cluster_id: Uuid, name: &str) -> Result<User> {
        select_rows!(User, ["where cluster_id = $1 and name = $2"], cluster_id, name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// One user of a cluster, read with the cluster's other such reads of the moment (see
    /// `batches.rs`): the requests that wait for a pass wake together at its end, and each
    /// reads its user again.
    pub async fn get_user_batched(&self, cluster_id: Uuid, name: &str) -> Result<User> {
        match self.readings.submit(&self.pool, cluster_id, Reading(name.into())).await {
            Some(user) => user.ok_or(Error::NotFound("user")),
            None => self.get_user(cluster_id, name).await,
        }
    }

    /// A cluster's databases, by name.
    pub async fn list_databases(&self, cluster_id: Uuid) -> Result<Vec<Database>> {
        Ok(of_cluster!(Database, &self.pool, cluster_id, all).await?)
    }

    /// One database of a cluster.
    pub async fn get_database(&self, cluster_id: Uuid, name: &str) -> Result<Database> {
        select_rows!(Database, ["where cluster_id = $1 and name = $2"], cluster_id, name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("database"))
    }

    /// Records a new normal user (desired present) with its settings (a new user has no
    /// parameters yet: a deleted user's went with its row) and wakes the reconcilers, in one
    /// statement, with the cluster's other new users of the moment (see `batches.rs`); one its
    /// batch leaves out is asked again alone, a batch of one, which says why.
    pub async fn insert_user(
        &self,
        cluster_id: Uuid,
        name: &str,
        credentials_sealed: &[u8],
        settings: &UserSettings,
    ) -> Result<User> {
        let creation =
            || Creation { name: name.into(), sealed: credentials_sealed.into(), settings: settings.clone() };
        if let Some(user) = self.creations.submit(&self.pool, cluster_id, creation()).await {
            return Ok(user);
        }
        let alone = insert_users(&self.pool, cluster_id, &[creation()])
            .await
            .map_err(|e| taken_on_server(e, ObjectKind::User, name))?;
        match alone.into_values().next() {
            Some(user) => Ok(user),
            None => Err(self.creation_refusal(cluster_id, name, &settings.parameters).await),
        }
    }

    /// Records a new normal user as [`Store::insert_user`] does, and its access `levels`
    /// (database, level) as [`Store::replace_access`] does, in one transaction, not batched:
    /// a level refused (its database deleted since the route read it) is refused before the
    /// user is written, and leaves no user behind.
    /// The databases the levels and the parameters name are held first (the order of every
    /// writer: databases, then the cluster's key, which the user's row takes).
    pub async fn insert_user_with_access(
        &self,
        cluster_id: Uuid,
        name: &str,
        credentials_sealed: &[u8],
        settings: &UserSettings,
        levels: &[(String, AccessLevel)],
    ) -> Result<(User, AccessProgress)> {
        let mut tx = self.pool.begin().await?;
        let mut named: Vec<&str> = levels.iter().map(|(d, _)| d.as_str()).collect();
        named.extend(settings.parameters.iter().filter_map(|p| p.database.as_deref()));
        named.sort_unstable();
        named.dedup();
        let present = hold_present_databases(&mut tx, cluster_id, &named).await?;
        crate::access::check_levels(levels, &present).map_err(Error::Invalid)?;
        let creation =
            Creation { name: name.into(), sealed: credentials_sealed.into(), settings: settings.clone() };
        let inserted = insert_users(&mut *tx, cluster_id, &[creation])
            .await
            .map_err(|e| taken_on_server(e, ObjectKind::User, name))?;
        let Some(user) = inserted.into_values().next() else {
            drop(tx);
            return Err(self.creation_refusal(cluster_id, name, &settings.parameters).await);
        };
        let access = super::access::write_access(&mut tx, cluster_id, name, levels).await?;
        tx.commit().await?;
        Ok((user, access))
    }

    /// Why a new user was left out of its statement: its name is taken (or still being freed),
    /// or one of its parameters names a database that is not (or no longer) present.
    async fn creation_refusal(&self, cluster_id: Uuid, name: &str, parameters: &[RoleParameter]) -> Error {
        if parameters.iter().any(|p| p.database.is_some()) {
            let present = match self.list_databases(cluster_id).await {
                Ok(databases) => databases
                    .into_iter()
                    .filter(|d| d.state == DesiredState::Present)
                    .map(|d| d.name)
                    .collect::<Vec<_>>(),
                Err(e) => return e,
            };
            if let Err(refused) = check_parameters_against(parameters, &present) {
                return refused;
            }
        }
        self.duplicate_error(ObjectKind::User, cluster_id, name).await
    }

    /// Records a new database (desired present, owned by the primary user) and wakes the
    /// reconcilers.
    pub async fn insert_database(&self, cluster_id: Uuid, name: &str) -> Result<Database> {
        let db: Option<Database> = changed_rows!(
            Database,
            ["insert into cluster_databases (cluster_id, name) values ($1, $2)
                 on conflict do nothing
                 returning *"],
            cluster_id,
            name,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| taken_on_server(e, ObjectKind::Database, name))?;
        match db {
            Some(db) => Ok(db),
            None => Err(self.duplicate_error(ObjectKind::Database, cluster_id, name).await),
        }
    }

    /// Changes a user's settings (what `change` leaves None stays); the reconciler applies
    /// them.
    pub async fn update_user_settings(
        &self,
        cluster_id: Uuid,
        name: &str,
        change: &SettingsChange,
    ) -> Result<User> {
        // One statement, or one transaction when the parameters are replaced too; a new
        // generation marks the user pending.
        let expiry = change.valid_until;
        let parameters = change.parameters.as_ref();
        let mut tx = match parameters {
            Some(_) => Some(self.pool.begin().await?),
            None => None,
        };
        let changed = changed_rows!(
            User,
            ["update cluster_users
                    set allow_replication = $3,
                        connection_limit = coalesce($4, connection_limit),
                        valid_until = case when $8 then $9 else valid_until end,
                        expiry_enforced_at = case when $8 then null else expiry_enforced_at end,
                        generation = generation + 1, updated_at = now(),
                        sync_status = case when sync_status = $5 then $5 else $6 end
                  where cluster_id = $1 and name = $2 and state = $7
              returning *"],
            cluster_id,
            name,
            change.allow_replication,
            change.connection_limit,
            SyncStatus::KEPT_BY_WRITE as _,
            SyncStatus::Ready.after_write() as _,
            DesiredState::Present as _,
            expiry.is_some(),
            expiry.flatten()
        );
        let user: Option<User> = match tx.as_mut() {
            Some(tx) => changed.fetch_optional(&mut **tx).await?,
            None => changed.fetch_optional(&self.pool).await?,
        };
        let Some(mut user) = user else {
            drop(tx);
            return Err(self.unchanged_user(cluster_id, name).await?);
        };
        if let (Some(mut tx), Some(parameters)) = (tx, parameters) {
            replace_parameters(&mut tx, cluster_id, name, parameters).await?;
            tx.commit().await?;
            user.parameters = sqlx::types::Json(parameters.clone());
        }
        Ok(user)
    }

    /// Rotates a user's credentials with a grace period: `sealed` (new credentials) become its
    /// current ones, carried by the login that was not current (its `alternate` login, named
    /// now if it has none yet), while the current ones (`other_sealed`, re-sealed under the
    /// other context; `was` is their sealed form as read, so that a concurrent reset is not
    /// lost) keep working on their login for `grace`. Refused (409) while an earlier grace
    /// runs, and (422) when `alternate` is another user's name.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_user_credentials(
        &self,
        cluster_id: Uuid,
        name: &str,
        was: &[u8],
        sealed: &[u8],
        other_sealed: &[u8],
        alternate: &str,
        grace: std::time::Duration,
    ) -> Result<User> {
        let user: Option<User> = changed_rows!(
            User,
            ["update cluster_users
                    set alternate_login = coalesce(alternate_login, $6),
                        alternate_active = not alternate_active,
                        credentials_sealed = $4, other_credentials_sealed = $5,
                        grace_until = now() + make_interval(secs => $7),
                        generation = generation + 1, updated_at = now(),
                        sync_status = case when sync_status = $8 then $8 else $9 end
                  where cluster_id = $1 and name = $2 and state = $10 and credentials_sealed = $3
                    and (grace_until is null or grace_until <= now())
                    and not exists (select 1 from cluster_users o
                                     where o.cluster_id = $1 and o.name = coalesce(cluster_users.alternate_login, $6))
              returning *"],
            cluster_id,
            name,
            was,
            sealed,
            other_sealed,
            alternate,
            grace.as_secs_f64(),
            SyncStatus::KEPT_BY_WRITE as _,
            SyncStatus::Ready.after_write() as _,
            DesiredState::Present as _,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| taken_on_server(e, ObjectKind::User, alternate))?;
        if let Some(user) = user {
            return Ok(user);
        }
        let current = self.get_user(cluster_id, name).await?;
        Err(if current.state != DesiredState::Present {
            being_deleted(ObjectKind::User, name)
        } else if current.grace_until.is_some_and(|t| t > chrono::Utc::now()) {
            Error::Conflict(format!(
                "the previous rotation of {name:?} keeps its old login working until {}; rotate again after it, or reset without a grace",
                current.grace_until.map(|t| t.to_rfc3339()).unwrap_or_default()
            ))
        } else if current.credentials_sealed != was {
            Error::Conflict(format!("the credentials of {name:?} changed meanwhile; try again"))
        } else {
            Error::Invalid(format!(
                "cannot rotate {name:?} with a grace: its second login would be named {:?}, a user of this cluster",
                current.alternate_login.as_deref().unwrap_or(alternate)
            ))
        })
    }

    /// Replaces a user's credentials (a password reset); the reconciler applies them. Goes
    /// with the cluster's other resets of the moment (see `batches.rs`); one its batch leaves
    /// out (not there, being deleted) is asked again alone, in a batch of its own, which says
    /// why.
    pub async fn replace_user_credentials(
        &self,
        cluster_id: Uuid,
        name: &str,
        credentials_sealed: &[u8],
    ) -> Result<User> {
        let reset = || Reset { name: name.into(), sealed: credentials_sealed.into() };
        if let Some(user) = self.resets.submit(&self.pool, cluster_id, reset()).await {
            return Ok(user);
        }
        match reset_users(&self.pool, cluster_id, &[reset()]).await?.remove(name) {
            Some(user) => Ok(user),
            None => Err(self.unchanged_user(cluster_id, name).await?),
        }
    }

    /// Why a user's change found no row to change: the user is being deleted, or not there.
    async fn unchanged_user(&self, cluster_id: Uuid, name: &str) -> Result<Error> {
        Ok(match self.object_state(ObjectKind::User, cluster_id, name).await? {
            Some(_) => being_deleted(ObjectKind::User, name),
            None => Error::NotFound("user"),
        })
    }

    /// Asks for an object to be dropped from the target: the row stays, in state "absent",
    /// until the reconciler has dropped it. Returns the new object generation and when the row
    /// was written (by the metadata database's clock, which waits compare it with).
    pub async fn request_deletion(
        &self,
        kind: ObjectKind,
        cluster_id: Uuid,
        name: &str,
    ) -> Result<(i64, DateTime<Utc>)> {
        self.mark_absent(kind, cluster_id, name).await
    }

    /// Asks for a user to be dropped, what it owns to be handed to `heir` (see [`Heir`]). The
    /// heir is stored with the request, so that every pass until the drop (after a restart
    /// too) uses it. Holding the rows of the user and of its heir (locked in name order, so that
    /// two deletions naming each other cannot deadlock), the request is refused, and nothing
    /// changes, when the user is the primary user (422), when the heir is not a present user of
    /// the cluster (422) or when the user is itself the heir of a pending deletion (409): a user
    /// and its heir deleted at the same moment cannot leave the first without an heir. A
    /// request that goes through is written with the cluster's other requests of the moment, in
    /// one round trip and one commit (see `batches.rs`); one that does not is asked again in a
    /// transaction that holds the rows and says why.
    pub async fn request_user_deletion(
        &self,
        cluster_id: Uuid,
        name: &str,
        heir: Heir<'_>,
    ) -> Result<(i64, DateTime<Utc>)> {
        let (named, stored) = match heir {
            Heir::Named(heir) => (heir, false),
            Heir::Stored => (None, true),
        };
        let deletion = || Deletion { name: name.into(), heir: named.map(Into::into), stored };
        if let Some(written) = self.deletions.submit(&self.pool, cluster_id, deletion()).await {
            return Ok(written);
        }
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query!(
            r#"select name as "name!", state as "state!: DesiredState", role as "role!: UserRole", reassign_to
                 from pgplane_hold_deletion_rows($1, $2, $3, $4)"#,
            cluster_id,
            name,
            named,
            stored
        )
        .fetch_all(&mut *tx)
        .await?;
        let Some(user) = locked.iter().find(|r| r.name == name) else {
            return Err(Error::NotFound("user"));
        };
        if user.role == UserRole::Primary {
            return Err(Error::Invalid(format!(
                "cannot delete the primary user {name:?}: every cluster keeps its primary user"
            )));
        }
        let heir = if stored { user.reassign_to.as_deref() } else { named };
        if let Some(heir) = heir {
            if !locked.iter().any(|r| r.name == heir && r.state == DesiredState::Present) {
                return Err(Error::Invalid(format!(
                    "reassign_to {heir:?} is not a user of this cluster (or is being deleted)"
                )));
            }
        }
        // The rows held, the request may have gone through since; if not, a pool or a pending
        // deletion stands in its way.
        let marked = mark_users_absent(&mut *tx, cluster_id, &[deletion()]).await?;
        let Some(&written) = marked.get(name) else {
            return Err(deletion_refusal(&mut tx, cluster_id, name).await?);
        };
        tx.commit().await?;
        Ok(written)
    }

    /// Records `message` as a present user's last_error, whatever generation was applied: a
    /// pass that carried out the user's step but withheld a power it asks for says why there
    /// (the next change to the user clears it when it is applied).
    pub async fn note_user_error(&self, cluster_id: Uuid, name: &str, message: &str) -> Result<()> {
        sqlx::query!(
            "update cluster_users set last_error = $3
              where cluster_id = $1 and name = $2 and state = $4 and last_error is distinct from $3",
            cluster_id,
            name,
            message,
            DesiredState::Present as _
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks an object absent under a new generation.
    async fn mark_absent(
        &self,
        kind: ObjectKind,
        cluster_id: Uuid,
        name: &str,
    ) -> Result<(i64, DateTime<Utc>)> {
        let (absent, kept, after) =
            (DesiredState::Absent, SyncStatus::KEPT_BY_WRITE, SyncStatus::Ready.after_write());
        let mut tx = self.pool.begin().await?;
        if kind == ObjectKind::Database {
            // Its row locked for update first: a writer of a row naming the database (a user's
            // parameter, an access level) holds its key while it checks that it is present
            // (`hold_present_databases`), so either it commits first, and its row is removed
            // below, or it waits for this and finds the database being deleted.
            sqlx::query!(
                "select 1 as held from cluster_databases where cluster_id = $1 and name = $2 for update",
                cluster_id,
                name
            )
            .fetch_optional(&mut *tx)
            .await?;
        }
        // One statement per table (a checked query names its table), written once.
        macro_rules! mark_absent {
            ($table:literal) => {
                changed_rows!(
                    written,
                    [
                        "update ",
                        $table,
                        " set state = $3, generation = generation + 1, updated_at = now(),
                              sync_status = case when sync_status = $4 then $4 else $5 end
                          where cluster_id = $1 and name = $2
                      returning generation, updated_at"
                    ],
                    cluster_id,
                    name,
                    absent as _,
                    kept as _,
                    after as _,
                )
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| (r.generation, r.updated_at))
            };
        }
        let written = match kind {
            ObjectKind::User => mark_absent!("cluster_users"),
            ObjectKind::Database => mark_absent!("cluster_databases"),
        };
        let written = written.ok_or(Error::NotFound(kind.noun()))?;
        if kind == ObjectKind::Database {
            // Its parameters go with it (DROP DATABASE removes them on the server).
            sqlx::query!(
                "delete from cluster_user_parameters where cluster_id = $1 and database_name = $2",
                cluster_id,
                name
            )
            .execute(&mut *tx)
            .await?;
            // So do its pools: a pool must not keep a database from being dropped (its pooler
            // stops serving them at once).
            let pools = sqlx::query!(
                "delete from cluster_pools where cluster_id = $1 and database_name = $2",
                cluster_id,
                name
            )
            .execute(&mut *tx)
            .await?;
            if pools.rows_affected() > 0 {
                super::pools::announce(&mut tx, cluster_id).await?;
            }
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Removes an object's row if pgplane never created it on the target and it has not
    /// changed since `generation` (used to withdraw a create that hit a conflict).
    pub async fn forget_unclaimed(
        &self,
        kind: ObjectKind,
        cluster_id: Uuid,
        name: &str,
        generation: i64,
    ) -> Result<bool> {
        macro_rules! forget {
            ($table:literal) => {
                sqlx::query!(
                    "delete from "
                        + $table
                        + " where cluster_id = $1 and name = $2 and generation = $3 and not claimed",
                    cluster_id,
                    name,
                    generation
                )
                .execute(&self.pool)
                .await?
            };
        }
        let deleted = match kind {
            ObjectKind::User => forget!("cluster_users"),
            ObjectKind::Database => forget!("cluster_databases"),
        };
        Ok(deleted.rows_affected() == 1)
    }

    /// The error for creating an object whose name is taken in the metadata.
    async fn duplicate_error(&self, kind: ObjectKind, cluster_id: Uuid, name: &str) -> Error {
        match self.object_state(kind, cluster_id, name).await {
            Ok(Some(DesiredState::Absent)) => being_deleted(kind, name),
            Ok(_) => Error::Invalid(format!("a {} named {name:?} already exists", kind.noun())),
            Err(e) => e,
        }
    }

    /// The desired state of an object, if it has a row.
    async fn object_state(
        &self,
        kind: ObjectKind,
        cluster_id: Uuid,
        name: &str,
    ) -> Result<Option<DesiredState>> {
        macro_rules! state {
            ($table:literal) => {
                sqlx::query_scalar!(
                    r#"select state as "state: DesiredState" from "#
                        + $table
                        + " where cluster_id = $1 and name = $2",
                    cluster_id,
                    name
                )
                .fetch_optional(&self.pool)
                .await?
            };
        }
        Ok(match kind {
            ObjectKind::User => state!("cluster_users"),
            ObjectKind::Database => state!("cluster_databases"),
        })
    }
}

/// A read of one user, done with the cluster's other reads of the moment (see
/// [`Store::get_user_batched`]).
pub(crate) struct Reading(String);

impl Batched for Reading {
    /// The user, None when it is not there.
    type Out = Option<User>;

    fn user(&self) -> &str {
        &self.0
    }

    async fn run(
        pool: &PgPool,
        cluster_id: Uuid,
        batch: &[Self],
    ) -> sqlx::Result<HashMap<String, Option<User>>> {
        let names: Vec<&str> = batch.iter().map(|r| r.0.as_str()).collect();
        let users =
            select_rows!(User named ["select unnest($2::text[])"], [""], cluster_id, &names as &[&str])
                .fetch_all(pool)
                .await?;
        let mut read: HashMap<String, Option<User>> = names.iter().map(|n| (n.to_string(), None)).collect();
        read.extend(users.into_iter().map(|u| (u.name.clone(), Some(u))));
        Ok(read)
    }
}

/// A new user, written with the cluster's other new users of the moment (see
/// [`insert_users`]).
pub(crate) struct Creation {
    name: String,
    sealed: Vec<u8>,
    settings: UserSettings,
}

impl Batched for Creation {
    type Out = User;

    fn user(&self) -> &str {
        &self.name
    }

    async fn run(pool: &PgPool, cluster_id: Uuid, batch: &[Self]) -> sqlx::Result<HashMap<String, User>> {
        insert_users(pool, cluster_id, batch).await
    }
}

/// Inserts new users and their parameters in one statement: the users in name order (so
/// that two batches naming the same users wait for each other rather than deadlock), the
/// databases their parameters name key-locked first (the parameters' own foreign key locks
/// them at the statement's end, and a cluster's unregistration holds the databases before
/// it: the order of every writer, ARCHITECTURE.md), and only while present (as
/// `hold_present_databases` holds them). The users inserted, by name; one left out (taken,
/// another user's alternate login, or a parameter set in a database not present) is asked
/// again alone, which says why.
async fn insert_users(
    conn: impl sqlx::PgExecutor<'_>,
    cluster_id: Uuid,
    batch: &[Creation],
) -> sqlx::Result<HashMap<String, User>> {
    let names: Vec<&str> = batch.iter().map(|c| c.name.as_str()).collect();
    let sealed: Vec<&[u8]> = batch.iter().map(|c| c.sealed.as_slice()).collect();
    let settings = || batch.iter().map(|c| &c.settings);
    let replication: Vec<bool> = settings().map(|s| s.allow_replication).collect();
    let limits: Vec<i32> = settings().map(|s| s.connection_limit).collect();
    let valid_until: Vec<Option<DateTime<Utc>>> = settings().map(|s| s.valid_until).collect();
    let leases: Vec<Option<i32>> = settings().map(|s| s.lease.as_ref().map(|l| l.seconds)).collect();
    let heirs: Vec<Option<&str>> =
        settings().map(|s| s.lease.as_ref().and_then(|l| l.heir.as_deref())).collect();
    let parameters = batch.iter().flat_map(|c| c.settings.parameters.iter().map(|p| (c.name.as_str(), p)));
    let (owners, parameters): (Vec<&str>, Vec<&RoleParameter>) = parameters.unzip();
    let (parameter_names, values, databases) = parameter_columns(parameters);
    let users: Vec<User> = changed_rows!(
        NewUser,
        ["insert into cluster_users (cluster_id, name, role, credentials_sealed, allow_replication,
                                     connection_limit, valid_until, lease_seconds, reassign_to)
             select $1, n.name, $3, n.sealed, n.replication, n.connection_limit, n.valid_until,
                    n.lease_seconds, n.heir
               from unnest($2::text[], $4::bytea[], $5::bool[], $6::int4[], $7::timestamptz[],
                           $8::int4[], $9::text[])
                    as n(name, sealed, replication, connection_limit, valid_until, lease_seconds, heir),
                    (select array(select d.name from cluster_databases d
                                   where d.cluster_id = $1 and d.name = any($13::text[]) and d.state = $14
                                   order by d.name for key share)) as present(names)
              where not exists (select 1 from cluster_users a
                                 where a.cluster_id = $1 and a.alternate_login = n.name)
                and not exists (select 1 from unnest($10::text[], $13::text[]) as p(user_name, database_name)
                                 where p.user_name = n.name and p.database_name is not null
                                   and p.database_name <> all(present.names))
              order by n.name
             on conflict do nothing
             returning *
           ), parameters as (
             insert into cluster_user_parameters (cluster_id, user_name, name, value, database_name)
             select $1, p.user_name, p.name, p.value, p.database_name
               from unnest($10::text[], $11::text[], $12::text[], $13::text[])
                    as p(user_name, name, value, database_name)
              where exists (select 1 from changed c where c.name = p.user_name)"],
        cluster_id,
        &names as &[&str],
        UserRole::Normal as _,
        &sealed as &[&[u8]],
        &replication,
        &limits,
        &valid_until as &[Option<DateTime<Utc>>],
        &leases as &[Option<i32>],
        &heirs as &[Option<&str>],
        &owners as &[&str],
        &parameter_names as &[&str],
        &values as &[&str],
        &databases as &[Option<&str>],
        DesiredState::Present as _,
    )
    .fetch_all(conn)
    .await?;
    // The statement's own snapshot cannot see the parameters it inserted.
    let mut asked: HashMap<&str, &UserSettings> =
        batch.iter().map(|c| (c.name.as_str(), &c.settings)).collect();
    Ok(users
        .into_iter()
        .map(|mut u| {
            if let Some(settings) = asked.remove(u.name.as_str()) {
                u.parameters = sqlx::types::Json(settings.parameters.clone());
            }
            (u.name.clone(), u)
        })
        .collect())
}

/// A user's new credentials (a password reset), written with the cluster's other resets of
/// the moment (see [`reset_users`]).
pub(crate) struct Reset {
    name: String,
    sealed: Vec<u8>,
}

impl Batched for Reset {
    type Out = User;

    fn user(&self) -> &str {
        &self.name
    }

    async fn run(pool: &PgPool, cluster_id: Uuid, batch: &[Self]) -> sqlx::Result<HashMap<String, User>> {
        reset_users(pool, cluster_id, batch).await
    }
}

/// Gives present users new credentials in one statement (a grace under way ends; one reset
/// asked again alone is a batch of one), their rows locked in name order first (`held`),
/// so that two batches naming the same users wait for each other rather than deadlock. The
/// users changed, by name; one left out (not there, or being deleted) is asked again alone,
/// which says why.
async fn reset_users(
    pool: &PgPool,
    cluster_id: Uuid,
    batch: &[Reset],
) -> sqlx::Result<HashMap<String, User>> {
    let names: Vec<&str> = batch.iter().map(|r| r.name.as_str()).collect();
    let sealed: Vec<&[u8]> = batch.iter().map(|r| r.sealed.as_slice()).collect();
    let users: Vec<User> = changed_rows!(
        User,
        ["with held as (
              select l.name
                from unnest(array(select n.name from unnest($2::text[]) as n(name) order by n.name)) as n(name),
                     lateral (select t.name from cluster_users t
                               where t.cluster_id = $1 and t.name = n.name and t.state = $6
                                 for no key update) l
          )
          update cluster_users t
             set credentials_sealed = n.sealed, grace_until = null,
                 generation = t.generation + 1, updated_at = now(),
                 sync_status = case when t.sync_status = $4 then $4 else $5 end
            from unnest($2::text[], $3::bytea[]) as n(name, sealed)
           where t.cluster_id = $1 and t.name = n.name and t.state = $6
             and (select count(*) from held) >= 0
          returning t.*"],
        cluster_id,
        &names as &[&str],
        &sealed as &[&[u8]],
        SyncStatus::KEPT_BY_WRITE as _,
        SyncStatus::Ready.after_write() as _,
        DesiredState::Present as _,
    )
    .fetch_all(pool)
    .await?;
    Ok(users.into_iter().map(|u| (u.name.clone(), u)).collect())
}

/// A user's deletion asked for, written with the cluster's others of the moment (see
/// [`mark_users_absent`]).
pub(crate) struct Deletion {
    name: String,
    /// The heir named; with `stored`, the one the user's row holds.
    heir: Option<String>,
    stored: bool,
}

impl Batched for Deletion {
    type Out = (i64, DateTime<Utc>);

    fn user(&self) -> &str {
        &self.name
    }

    async fn run(
        pool: &PgPool,
        cluster_id: Uuid,
        batch: &[Self],
    ) -> sqlx::Result<HashMap<String, Self::Out>> {
        mark_users_absent(pool, cluster_id, batch).await
    }
}

/// Marks users absent with their heirs, each unless its deletion is refused (see
/// [`Store::request_user_deletion`]): the database's `pgplane_request_user_deletions`
/// (migration 24), which locks the rows of the users and of their heirs in name order, then
/// marks the users in a statement (a snapshot) of its own, so that it sees every pool and
/// deletion committed before the locks were granted; a user and its heir asked together are
/// left out. The users marked, with their generation and write time; one not there: refused,
/// left out, or the user is not there.
async fn mark_users_absent<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    cluster_id: Uuid,
    deletions: &[Deletion],
) -> sqlx::Result<HashMap<String, (i64, DateTime<Utc>)>> {
    let names: Vec<&str> = deletions.iter().map(|d| d.name.as_str()).collect();
    let heirs: Vec<Option<&str>> = deletions.iter().map(|d| d.heir.as_deref()).collect();
    let stored: Vec<bool> = deletions.iter().map(|d| d.stored).collect();
    let rows = sqlx::query!(
        r#"select marked as "name!", written_generation as "generation!", written_at as "updated_at!"
             from pgplane_request_user_deletions($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        cluster_id,
        &names as &[&str],
        &heirs as &[Option<&str>],
        &stored,
        DesiredState::Absent as _,
        DesiredState::Present as _,
        UserRole::Primary as _,
        SyncStatus::KEPT_BY_WRITE as _,
        SyncStatus::Ready.after_write() as _,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, (r.generation, r.updated_at))).collect())
}

fn being_deleted(kind: ObjectKind, name: &str) -> Error {
    Error::Conflict(format!("the {} {name:?} is being deleted; try again once it is gone", kind.noun()))
}

/// Why a user's deletion was refused (in the transaction that holds its row): the connection
/// pools that log in as it (422), or the pending deletion it inherits from (409).
async fn deletion_refusal(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    cluster_id: Uuid,
    name: &str,
) -> Result<Error> {
    let pools: Vec<String> = sqlx::query_scalar!(
        "select name from cluster_pools where cluster_id = $1 and user_name = $2 order by name",
        cluster_id,
        name
    )
    .fetch_all(&mut **tx)
    .await?;
    if !pools.is_empty() {
        return Ok(Error::Invalid(format!(
            "user {name:?} is the user of the connection pool(s) {}: delete them, or give them another \
             user, first",
            pools.join(", ")
        )));
    }
    let heir_of: Option<String> = sqlx::query_scalar!(
        "select name from cluster_users
          where cluster_id = $1 and state = $3 and reassign_to = $2
          order by name limit 1",
        cluster_id,
        name,
        DesiredState::Absent as _
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(Error::Conflict(match heir_of {
        Some(heir_of) => format!(
            "the user {name:?} inherits what {heir_of:?} owns, whose deletion is still pending; \
             try again once it is gone"
        ),
        None => format!("the user {name:?} changed while its deletion was asked for; try again"),
    }))
}
