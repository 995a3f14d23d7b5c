//! Rows of the objects pgplane manages on a cluster: users (roles) and databases. Both kinds
//! share the desired-state columns (state, generation, sync_status, claimed), so the lifecycle
//! queries are written once, over [`ObjectKind`].

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{taken_on_server, with_bump, Store};
use crate::error::{Error, Result};
use crate::lifecycle::{DesiredState, ObjectKind, SYNC_AFTER_WRITE_SQL};
use crate::model::{Database, User};

/// The table that holds objects of a kind.
pub(super) fn table(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::User => "cluster_users",
        ObjectKind::Database => "cluster_databases",
    }
}

/// How many objects, over every cluster, are waiting to be applied, carry an error, or are in
/// conflict with a same-named object pgplane does not own (for the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    pub pending: i64,
    pub failed: i64,
    pub conflict: i64,
}

impl Store {
    /// Counts of unsettled objects of one kind, over every cluster: in conflict; else failed
    /// (carrying an error); else pending (desired state not yet applied).
    pub async fn object_counts(&self, kind: ObjectKind) -> Result<ObjectCounts> {
        let sql = format!(
            "select count(*) filter (where sync_status = 'conflict'),
                    count(*) filter (where sync_status <> 'conflict' and last_error is not null),
                    count(*) filter (where sync_status <> 'conflict' and last_error is null
                                     and (sync_status = 'pending' or applied_generation < generation))
             from {}",
            table(kind)
        );
        let (conflict, failed, pending): (i64, i64, i64) = sqlx::query_as(&sql).fetch_one(&self.pool).await?;
        Ok(ObjectCounts { pending, failed, conflict })
    }

    /// A cluster's users, by name.
    pub async fn list_users(&self, cluster_id: Uuid) -> Result<Vec<User>> {
        self.objects(ObjectKind::User, cluster_id, false).await
    }

    /// A cluster's users and databases, read at the same time: all of them, or (for a pass
    /// woken by a write) only those whose desired state has not been applied yet.
    pub async fn cluster_objects(
        &self,
        cluster_id: Uuid,
        changed_only: bool,
    ) -> Result<(Vec<User>, Vec<Database>)> {
        tokio::try_join!(
            self.objects(ObjectKind::User, cluster_id, changed_only),
            self.objects(ObjectKind::Database, cluster_id, changed_only)
        )
    }

    /// A cluster's objects of one kind, by name; all, or only the changed ones.
    async fn objects<T>(&self, kind: ObjectKind, cluster_id: Uuid, changed_only: bool) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let changed = if changed_only { " and applied_generation < generation" } else { "" };
        let sql = format!("select * from {} where cluster_id = $1{changed} order by name", table(kind));
        Ok(sqlx::query_as(&sql).bind(cluster_id).fetch_all(&self.pool).await?)
    }

    /// One user of a cluster.
    pub async fn get_user(&self, cluster_id: Uuid, name: &str) -> Result<User> {
        sqlx::query_as("select * from cluster_users where cluster_id = $1 and name = $2")
            .bind(cluster_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// A cluster's databases, by name.
    pub async fn list_databases(&self, cluster_id: Uuid) -> Result<Vec<Database>> {
        self.objects(ObjectKind::Database, cluster_id, false).await
    }

    /// One database of a cluster.
    pub async fn get_database(&self, cluster_id: Uuid, name: &str) -> Result<Database> {
        sqlx::query_as("select * from cluster_databases where cluster_id = $1 and name = $2")
            .bind(cluster_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("database"))
    }

    /// Records a new normal user (desired present) and wakes the reconcilers.
    pub async fn insert_user(
        &self,
        cluster_id: Uuid,
        name: &str,
        credentials_sealed: &[u8],
        allow_replication: bool,
    ) -> Result<User> {
        let user: Option<User> = sqlx::query_as(&with_bump(
            "insert into cluster_users (cluster_id, name, role, credentials_sealed, allow_replication)
             values ($1, $2, 'normal', $3, $4)
             on conflict do nothing
             returning *",
        ))
        .bind(cluster_id)
        .bind(name)
        .bind(credentials_sealed)
        .bind(allow_replication)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| taken_on_server(e, ObjectKind::User, name))?;
        match user {
            Some(user) => Ok(user),
            None => Err(self.duplicate_error(ObjectKind::User, cluster_id, name).await),
        }
    }

    /// Records a new database (desired present, owned by the primary user) and wakes the
    /// reconcilers.
    pub async fn insert_database(&self, cluster_id: Uuid, name: &str) -> Result<Database> {
        let db: Option<Database> = sqlx::query_as(&with_bump(
            "insert into cluster_databases (cluster_id, name) values ($1, $2)
             on conflict do nothing
             returning *",
        ))
        .bind(cluster_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| taken_on_server(e, ObjectKind::Database, name))?;
        match db {
            Some(db) => Ok(db),
            None => Err(self.duplicate_error(ObjectKind::Database, cluster_id, name).await),
        }
    }

    /// Changes a user's settings; the reconciler applies them.
    pub async fn update_user_settings(
        &self,
        cluster_id: Uuid,
        name: &str,
        allow_replication: bool,
    ) -> Result<User> {
        self.change_user(cluster_id, name, Some(allow_replication), None).await
    }

    /// Replaces a user's credentials (a password reset); the reconciler applies them.
    pub async fn replace_user_credentials(
        &self,
        cluster_id: Uuid,
        name: &str,
        credentials_sealed: &[u8],
    ) -> Result<User> {
        self.change_user(cluster_id, name, None, Some(credentials_sealed)).await
    }

    /// Applies a change to a present user and marks it pending under a new generation.
    async fn change_user(
        &self,
        cluster_id: Uuid,
        name: &str,
        allow_replication: Option<bool>,
        credentials_sealed: Option<&[u8]>,
    ) -> Result<User> {
        let user: Option<User> = sqlx::query_as(&with_bump(&format!(
            "update cluster_users
                set allow_replication = coalesce($3, allow_replication),
                    credentials_sealed = coalesce($4, credentials_sealed),
                    generation = generation + 1, updated_at = now(),
                    sync_status = {SYNC_AFTER_WRITE_SQL}
              where cluster_id = $1 and name = $2 and state = 'present'
          returning *"
        )))
        .bind(cluster_id)
        .bind(name)
        .bind(allow_replication)
        .bind(credentials_sealed)
        .fetch_optional(&self.pool)
        .await?;
        match user {
            Some(user) => Ok(user),
            None => Err(match self.object_state(ObjectKind::User, cluster_id, name).await? {
                Some(_) => being_deleted(ObjectKind::User, name),
                None => Error::NotFound("user"),
            }),
        }
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
        self.mark_absent(kind, cluster_id, name, "").await
    }

    /// Asks for a user to be dropped, what it owns to be handed to `heir` (None: the primary
    /// user). The heir is stored with the request, so that every pass until the drop (after a
    /// restart too) uses it. In one transaction that holds the rows of the user and of its heir
    /// (locked in name order, so that two deletions naming each other cannot deadlock), the
    /// request is refused, and nothing changes, when the heir is not a present user of the
    /// cluster (422) or when the user is itself the heir of a pending deletion (409): a user
    /// and its heir deleted at the same moment cannot leave the first without an heir.
    pub async fn request_user_deletion(
        &self,
        cluster_id: Uuid,
        name: &str,
        heir: Option<&str>,
    ) -> Result<(i64, DateTime<Utc>)> {
        let mut tx = self.pool.begin().await?;
        let locked: Vec<(String, DesiredState)> = sqlx::query_as(
            "select name, state from cluster_users
              where cluster_id = $1 and (name = $2 or name = $3)
              order by name for update",
        )
        .bind(cluster_id)
        .bind(name)
        .bind(heir)
        .fetch_all(&mut *tx)
        .await?;
        if !locked.iter().any(|(n, _)| n == name) {
            return Err(Error::NotFound("user"));
        }
        if let Some(heir) = heir {
            if !locked.iter().any(|(n, state)| n == heir && *state == DesiredState::Present) {
                return Err(Error::Invalid(format!(
                    "reassign_to {heir:?} is not a user of this cluster (or is being deleted)"
                )));
            }
        }
        // A new statement, so a new snapshot: it sees every deletion committed before the lock
        // was granted.
        let heir_of: Option<String> = sqlx::query_scalar(
            "select name from cluster_users
              where cluster_id = $1 and state = 'absent' and reassign_to = $2
              order by name limit 1",
        )
        .bind(cluster_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(heir_of) = heir_of {
            return Err(Error::Conflict(format!(
                "the user {name:?} inherits what {heir_of:?} owns, whose deletion is still pending; \
                 try again once it is gone"
            )));
        }
        let sql = with_bump(&format!(
            "update cluster_users set state = 'absent', generation = generation + 1, updated_at = now(),
                    sync_status = {SYNC_AFTER_WRITE_SQL}, reassign_to = $3
              where cluster_id = $1 and name = $2
          returning generation, updated_at"
        ));
        let written: (i64, DateTime<Utc>) =
            sqlx::query_as(&sql).bind(cluster_id).bind(name).bind(heir).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Records `message` as a present user's last_error, whatever generation was applied: a
    /// pass that carried out the user's step but withheld a power it asks for says why there
    /// (the next change to the user clears it when it is applied).
    pub async fn note_user_error(&self, cluster_id: Uuid, name: &str, message: &str) -> Result<()> {
        sqlx::query(
            "update cluster_users set last_error = $3
              where cluster_id = $1 and name = $2 and state = 'present' and last_error is distinct from $3",
        )
        .bind(cluster_id)
        .bind(name)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks an object absent (with `extra` assignments) under a new generation.
    async fn mark_absent(
        &self,
        kind: ObjectKind,
        cluster_id: Uuid,
        name: &str,
        extra: &str,
    ) -> Result<(i64, DateTime<Utc>)> {
        let sql = with_bump(&format!(
            "update {} set state = 'absent', generation = generation + 1, updated_at = now(),
                    sync_status = {SYNC_AFTER_WRITE_SQL}{extra}
              where cluster_id = $1 and name = $2
          returning generation, updated_at",
            table(kind)
        ));
        let written: Option<(i64, DateTime<Utc>)> =
            sqlx::query_as(&sql).bind(cluster_id).bind(name).fetch_optional(&self.pool).await?;
        written.ok_or(Error::NotFound(kind.noun()))
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
        let sql = format!(
            "delete from {} where cluster_id = $1 and name = $2 and generation = $3 and not claimed",
            table(kind)
        );
        let deleted =
            sqlx::query(&sql).bind(cluster_id).bind(name).bind(generation).execute(&self.pool).await?;
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
        let sql = format!("select state from {} where cluster_id = $1 and name = $2", table(kind));
        Ok(sqlx::query_scalar(&sql).bind(cluster_id).bind(name).fetch_optional(&self.pool).await?)
    }
}

fn being_deleted(kind: ObjectKind, name: &str) -> Error {
    Error::Conflict(format!("the {} {name:?} is being deleted; try again once it is gone", kind.noun()))
}
