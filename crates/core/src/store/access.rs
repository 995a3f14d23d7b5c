//! Access levels in the metadata store: the desired levels per (user, database), how far each
//! user's levels have been carried out, and the access group roles of a cluster's server: their
//! names (drawn when a level is first asked for), the oids of the roles pgplane created under
//! them, and conflicts with roles it did not create found there. A change to a user's levels
//! bumps its access generation and the cluster's generation (waking the reconcilers) in the
//! same transaction; the levels' lifecycle is `lifecycle::access`.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{notify, Store, WAKE_CHANNEL};
use crate::access::{check_levels, new_group_role, AccessLevel};
use crate::error::{Error, Result};
use crate::lifecycle::{AccessOutcome, DesiredState, SyncStatus, UserRole};
use crate::model::{AccessGrant, AccessProgress};

/// What a pass needs to know about a cluster's access levels.
#[derive(Debug, Default)]
pub struct AccessForPass {
    /// The levels of present users on present databases.
    pub grants: Vec<AccessGrant>,
    /// Users whose latest levels have not been carried out (or failed).
    pub pending: Vec<AccessProgress>,
    /// The group roles pgplane has created (or was about to) on the server.
    pub groups: Vec<RecordedGroup>,
    /// The cluster's users pgplane created or adopted (not those in conflict): the only roles
    /// other than the admin role and the primary user that may belong to its groups.
    pub users: Vec<String>,
}

/// An access group role as recorded in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGroup {
    pub database: String,
    pub level: AccessLevel,
    /// The name pgplane chose for it.
    pub role: String,
    /// The oid of the role pgplane created under that name: None before it has created one,
    /// 0 for a group recorded before oids were (adopted once checked).
    pub role_oid: Option<i64>,
    /// Why the role found under the name is not pgplane's, while it is there.
    pub conflict: Option<String>,
}

/// The oid a group recorded before oids were carries until a pass adopts its role.
pub const UNRECORDED_OID: i64 = 0;

/// Records group roles' names, (database, level, role); a group already recorded keeps its name.
/// Inserted in (database, level) order, so that two writers naming the same new groups wait
/// for each other on the first rather than each hold one the other waits for.
async fn insert_access_groups(
    conn: impl sqlx::PgExecutor<'_>,
    cluster_id: Uuid,
    groups: &[(&str, AccessLevel, &str)],
) -> Result<()> {
    let mut groups = groups.to_vec();
    groups.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
    let databases: Vec<&str> = groups.iter().map(|g| g.0).collect();
    let levels: Vec<&str> = groups.iter().map(|g| g.1.as_str()).collect();
    let roles: Vec<&str> = groups.iter().map(|g| g.2).collect();
    sqlx::query!(
        "insert into cluster_access_groups (cluster_id, database_name, level, role)
             select $1, d, l, r from unnest($2::text[], $3::text[], $4::text[]) as t(d, l, r)
             on conflict do nothing",
        cluster_id,
        &databases as &[&str],
        &levels as &[&str],
        &roles as &[&str]
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The levels of a cluster's users on its present databases (one user's, when `user` is
    /// given), by user and database.
    pub async fn list_access(&self, cluster_id: Uuid, user: Option<&str>) -> Result<Vec<AccessGrant>> {
        Ok(sqlx::query_as!(
            AccessGrant,
            "select a.user_name, a.database_name, a.level
               from cluster_user_access a
               join cluster_databases d on d.cluster_id = a.cluster_id and d.name = a.database_name
              where a.cluster_id = $1 and d.state = $3 and ($2::text is null or a.user_name = $2)
              order by a.user_name, a.database_name",
            cluster_id,
            user,
            DesiredState::Present as _
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// How far a user's levels have been carried out.
    pub async fn access_progress(&self, cluster_id: Uuid, user: &str) -> Result<AccessProgress> {
        select_rows!(AccessProgress, ["where cluster_id = $1 and name = $2"], cluster_id, user)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// Replaces a normal, present user's levels with `levels` (database, level); databases
    /// must be present ones of the cluster (422 otherwise). When anything changed, the user's
    /// access generation and the cluster's generation are bumped and the reconcilers woken.
    pub async fn replace_access(
        &self,
        cluster_id: Uuid,
        user: &str,
        levels: &[(String, AccessLevel)],
    ) -> Result<AccessProgress> {
        let mut tx = self.pool.begin().await?;
        let progress = write_access(&mut tx, cluster_id, user, levels).await?;
        tx.commit().await?;
        Ok(progress)
    }

    /// Users of a cluster whose latest levels have not been carried out (or failed): each
    /// condition read through its partial index, then the rows of the names found (a pass reads
    /// this on a resync, or when its cluster's row says some wait, `PassCluster::access_waits`).
    pub async fn pending_access(&self, cluster_id: Uuid) -> Result<Vec<AccessProgress>> {
        Ok(select_rows!(
            AccessProgress named [
                "select name from cluster_users
                  where cluster_id = $1 and access_applied_generation < access_generation
                 union
                 select name from cluster_users where cluster_id = $1 and access_error is not null"
            ],
            ["where state = $2"],
            cluster_id,
            DesiredState::Present as _
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A cluster's access state for a pass, read once the pass's role and database outcomes
    /// are recorded: levels count only for users and databases pgplane has created on the
    /// target and that are not in conflict with an object it does not manage (a role that is
    /// not pgplane's is never made a member, a database that is not pgplane's never granted on).
    pub async fn access_for_pass(
        &self,
        cluster_id: Uuid,
        pending: Vec<AccessProgress>,
    ) -> Result<AccessForPass> {
        let (present, conflict) = (DesiredState::Present, SyncStatus::Conflict);
        let grants = sqlx::query_as!(
            AccessGrant,
            "select a.user_name, a.database_name, a.level
               from cluster_user_access a
               join cluster_users u on u.cluster_id = a.cluster_id and u.name = a.user_name
               join cluster_databases d on d.cluster_id = a.cluster_id and d.name = a.database_name
              where a.cluster_id = $1 and u.state = $2 and u.claimed and u.sync_status <> $3
                and d.state = $2 and d.claimed and d.sync_status <> $3
              order by a.database_name, a.user_name",
            cluster_id,
            present as _,
            conflict as _
        )
        .fetch_all(&self.pool);
        let groups = sqlx::query!(
            "select database_name, level, role, role_oid, conflict
               from cluster_access_groups where cluster_id = $1 order by role",
            cluster_id
        )
        .fetch_all(&self.pool);
        let users = sqlx::query_scalar!(
            "select name from cluster_users
              where cluster_id = $1 and claimed and sync_status <> $2 order by name",
            cluster_id,
            conflict as _
        )
        .fetch_all(&self.pool);
        let (grants, groups, users) = tokio::try_join!(grants, groups, users)?;
        let groups = groups
            .into_iter()
            .filter_map(|g| {
                let level = AccessLevel::parse(&g.level)?;
                Some(RecordedGroup {
                    database: g.database_name,
                    level,
                    role: g.role,
                    role_oid: g.role_oid,
                    conflict: g.conflict,
                })
            })
            .collect();
        Ok(AccessForPass { grants, pending, groups, users })
    }

    /// Records the names of group roles pgplane is about to create (before CREATE ROLE):
    /// (database, level, role).
    pub async fn record_access_groups(
        &self,
        cluster_id: Uuid,
        groups: &[(&str, AccessLevel, &str)],
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        insert_access_groups(&self.pool, cluster_id, groups).await
    }

    /// Records the oid of the role pgplane created (or adopted) under a group's name; the
    /// group is no longer in conflict.
    pub async fn record_access_group_oid(&self, cluster_id: Uuid, role: &str, oid: i64) -> Result<()> {
        sqlx::query!(
            "update cluster_access_groups set role_oid = $3, conflict = null
              where cluster_id = $1 and role = $2",
            cluster_id,
            role,
            oid
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives a recorded group whose role is gone a new name (before its role is created again).
    pub async fn rename_access_group(&self, cluster_id: Uuid, role: &str, new_role: &str) -> Result<()> {
        sqlx::query!(
            "update cluster_access_groups set role = $3, role_oid = null, conflict = null
              where cluster_id = $1 and role = $2",
            cluster_id,
            role,
            new_role
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records, per group role, why the role found under its name is not pgplane's (None: no
    /// conflict any more).
    pub async fn record_access_group_conflicts(
        &self,
        cluster_id: Uuid,
        conflicts: &[(&str, Option<&str>)],
    ) -> Result<()> {
        if conflicts.is_empty() {
            return Ok(());
        }
        let roles: Vec<&str> = conflicts.iter().map(|c| c.0).collect();
        let messages: Vec<Option<&str>> = conflicts.iter().map(|c| c.1).collect();
        sqlx::query!(
            "update cluster_access_groups g set conflict = t.m
               from unnest($2::text[], $3::text[]) as t(r, m)
              where g.cluster_id = $1 and g.role = t.r and g.conflict is distinct from t.m",
            cluster_id,
            &roles as &[&str],
            &messages as &[Option<&str>]
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets group roles: dropped, gone, or never pgplane's and no longer needed.
    pub async fn forget_access_groups(&self, cluster_id: Uuid, roles: &[&str]) -> Result<()> {
        if roles.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "delete from cluster_access_groups where cluster_id = $1 and role = any($2)",
            cluster_id,
            roles as &[&str]
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The groups of a cluster in conflict: (database, level, why).
    pub async fn access_group_conflicts(&self, cluster_id: Uuid) -> Result<Vec<(String, String, String)>> {
        Ok(sqlx::query!(
            r#"select database_name, level, conflict as "conflict!" from cluster_access_groups
                where cluster_id = $1 and conflict is not null"#,
            cluster_id
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|g| (g.database_name, g.level, g.conflict))
        .collect())
    }

    /// The name recorded for the group role holding `level` on `database` of a cluster.
    pub async fn access_group_role(
        &self,
        cluster_id: Uuid,
        database: &str,
        level: AccessLevel,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar!(
            "select role from cluster_access_groups
              where cluster_id = $1 and database_name = $2 and level = $3",
            cluster_id,
            database,
            level.as_str()
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records how a pass left users' levels: carried out at the access generation it read
    /// (message None), or failed with a message (the applied generation stays).
    pub async fn record_access(
        &self,
        cluster_id: Uuid,
        outcomes: &[(&str, i64, Option<&str>)],
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = outcomes.iter().map(|o| o.0).collect();
        let generations: Vec<i64> = outcomes.iter().map(|o| o.1).collect();
        let effects: Vec<_> = outcomes.iter().map(|o| AccessOutcome::from_error(o.2).effect()).collect();
        let advance: Vec<bool> = effects.iter().map(|e| e.advance).collect();
        let errors: Vec<Option<&str>> = effects.iter().map(|e| e.error).collect();
        // The rows locked by name first, the order of every writer (ARCHITECTURE.md).
        sqlx::query!(
            "with held as (
               select name from cluster_users where cluster_id = $1 and name = any($2)
                order by name for no key update
             )
             update cluster_users t
                set access_applied_generation = case when o.advance
                        then greatest(t.access_applied_generation, o.generation)
                        else t.access_applied_generation end,
                    access_error = o.error,
                    updated_at = now()
               from unnest($2::text[], $3::int8[], $4::bool[], $5::text[]) as o(name, generation, advance, error)
              where t.cluster_id = $1 and t.name = o.name and (select count(*) from held) >= 0",
            cluster_id,
            &names as &[&str],
            &generations,
            &advance,
            &errors as &[Option<&str>]
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a pass's failure on every user whose levels wait to be carried out.
    pub async fn fail_pending_access(&self, cluster_id: Uuid, message: &str) -> Result<()> {
        sqlx::query!(
            "with held as (
               select name from cluster_users where cluster_id = $1 and access_applied_generation < access_generation
                order by name for no key update
             )
             update cluster_users t set access_error = $2, updated_at = now()
               from held h
              where t.cluster_id = $1 and t.name = h.name and t.access_applied_generation < t.access_generation
                and (select count(*) from held) >= 0",
            cluster_id,
            message
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// [`Store::replace_access`] within the transaction `tx`, which it leaves open (a new user's
/// levels are written in its creation's, `Store::insert_user_with_access`).
pub(super) async fn write_access(
    tx: &mut Transaction<'_, Postgres>,
    cluster_id: Uuid,
    user: &str,
    levels: &[(String, AccessLevel)],
) -> Result<AccessProgress> {
    let found = sqlx::query!(
        r#"select role as "role: UserRole", state as "state: DesiredState" from cluster_users
                where cluster_id = $1 and name = $2 for update"#,
        cluster_id,
        user
    )
    .fetch_optional(&mut **tx)
    .await?;
    match found {
        None => return Err(Error::NotFound("user")),
        Some(r) if r.state == DesiredState::Absent => {
            return Err(Error::Conflict(format!(
                "the user {user:?} is being deleted; try again once it is gone"
            )))
        }
        Some(r) if r.role == UserRole::Primary => {
            return Err(Error::Invalid(format!(
                "the primary user {user:?} owns every database of the cluster; its access cannot be changed"
            )))
        }
        Some(_) => {}
    }
    let databases: Vec<&str> = levels.iter().map(|(d, _)| d.as_str()).collect();
    let names: Vec<&str> = levels.iter().map(|(_, l)| l.as_str()).collect();
    let known = super::objects::hold_present_databases(tx, cluster_id, &databases).await?;
    check_levels(levels, &known).map_err(Error::Invalid)?;
    let removed = sqlx::query!(
        "delete from cluster_user_access
              where cluster_id = $1 and user_name = $2 and not (database_name = any($3))",
        cluster_id,
        user,
        &databases as &[&str]
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let upserted = sqlx::query!(
        "insert into cluster_user_access (cluster_id, user_name, database_name, level)
             select $1, $2, d, l from unnest($3::text[], $4::text[]) as t(d, l)
             on conflict (cluster_id, user_name, database_name) do update set level = excluded.level
              where cluster_user_access.level <> excluded.level",
        cluster_id,
        user,
        &databases as &[&str],
        &names as &[&str]
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    // The groups' names are drawn now, recorded before any pass creates the roles.
    let roles: Vec<String> = levels.iter().map(|(_, l)| new_group_role(*l)).collect();
    let groups: Vec<(&str, AccessLevel, &str)> =
        levels.iter().zip(&roles).map(|((d, l), r)| (d.as_str(), *l, r.as_str())).collect();
    insert_access_groups(&mut **tx, cluster_id, &groups).await?;
    let changed = removed + upserted > 0;
    let progress = if changed {
        let progress = sqlx::query_as!(
            AccessProgress,
            "update cluster_users set access_generation = access_generation + 1, updated_at = now()
                  where cluster_id = $1 and name = $2
              returning name, access_generation, access_applied_generation, access_error, updated_at",
            cluster_id,
            user
        )
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query!(
            "update clusters
                    set generation = generation + 1, attempts = 0, next_attempt_at = now(), updated_at = now()
                  where cluster_id = $1",
            cluster_id
        )
        .execute(&mut **tx)
        .await?;
        notify(tx, WAKE_CHANNEL, cluster_id).await?;
        progress
    } else {
        select_rows!(AccessProgress, ["where cluster_id = $1 and name = $2"], cluster_id, user)
            .fetch_one(&mut **tx)
            .await?
    };
    Ok(progress)
}
