//! Connection pools: the API's writes (each checked against the cluster's databases and users
//! and against the server connections its pooler may hand out, in one transaction that holds
//! the server's pool budget), and what a pooler reads and reports (see crates/pooler).

use uuid::Uuid;

use super::Store;
use crate::error::{Error, Result};
use crate::lifecycle::DesiredState;
use crate::model::{Cluster, Pool, PoolListener, PoolMode, PoolSpec};

/// Channel on which pool, trusted-source and pooler changes are announced; the payload is the
/// cluster id.
pub const POOLS_CHANNEL: &str = "pgplane_pools";

/// Advisory lock class (the first key of the two-key form) of a server's pool budget.
const POOL_BUDGET_LOCK: i32 = 0x706f_6f6c; // "pool"

/// What a pooler says about itself when it starts and at every heartbeat.
#[derive(Debug, Clone)]
pub struct PoolerRegistration {
    /// The server address it sits beside: clusters registered at it are its own.
    pub server_host: String,
    pub server_port: i32,
    /// The host its pools' connection strings name.
    pub advertise_host: String,
    pub port_first: i32,
    pub port_last: i32,
    /// Server connections its pools may use in all.
    pub server_connections: i32,
    /// The percentage of them one team's pools may use.
    pub team_share: i32,
    /// The pooler process, drawn at its start.
    pub instance_id: Uuid,
}

/// How long a pooler's row stays its own without a heartbeat: past it, another pooler for the
/// same server may take over.
pub const POOLER_LEASE_SECS: f64 = 15.0;

/// What a pooler needs to serve one cluster.
#[derive(Debug, Clone)]
pub struct ServedCluster {
    pub cluster: Cluster,
    /// The port its PgBouncer listens on.
    pub port: i32,
    pub pools: Vec<ServedPool>,
}

/// A pool as the pooler runs it, with what it must know about its database and user.
#[derive(Debug, Clone)]
pub struct ServedPool {
    pub pool: Pool,
    /// Its database is being deleted (the pool is not served).
    pub database_leaving: bool,
    /// Its user is not a present user of the cluster (deleted by hand in the metadata, or being
    /// deleted): the pool is not served.
    pub user_missing: bool,
}

/// The pooler's outcome for one pool: the generation it applied, or why it could not.
#[derive(Debug, Clone)]
pub struct PoolReport {
    pub name: String,
    pub generation: i64,
    pub error: Option<String>,
}

impl Store {
    /// A cluster's pools, by name.
    pub async fn list_pools(&self, cluster_id: Uuid) -> Result<Vec<Pool>> {
        Ok(sqlx::query_as!(
            Pool,
            r#"select cluster_id, name, mode as "mode: PoolMode", size, database_name, user_name,
                      generation, applied_generation, last_error, created_at, updated_at
                 from cluster_pools where cluster_id = $1 order by name"#,
            cluster_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One pool of a cluster.
    pub async fn get_pool(&self, cluster_id: Uuid, name: &str) -> Result<Pool> {
        sqlx::query_as!(
            Pool,
            r#"select cluster_id, name, mode as "mode: PoolMode", size, database_name, user_name,
                      generation, applied_generation, last_error, created_at, updated_at
                 from cluster_pools where cluster_id = $1 and name = $2"#,
            cluster_id,
            name
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::NotFound("pool"))
    }

    /// Where a cluster's pools are served (None: it has had no pool yet).
    pub async fn pool_listener(&self, cluster_id: Uuid) -> Result<Option<PoolListener>> {
        Ok(sqlx::query_as!(
            PoolListener,
            r#"select p.advertise_host as host, l.port, p.heartbeat_at
                 from pool_listeners l
                 join poolers p on (p.server_host, p.server_port) = (l.server_host, l.server_port)
                where l.cluster_id = $1"#,
            cluster_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Creates a pool (409 when the name is taken; 422 when no pooler serves the cluster's
    /// server, when its database or user is not the cluster's, or when the server's pools
    /// would use more server connections than the pooler allows).
    pub async fn create_pool(&self, cluster: &Cluster, name: &str, spec: &PoolSpec) -> Result<Pool> {
        self.save_pool(cluster, name, spec, false).await
    }

    /// Replaces a pool's mode, size, database and user (404 when there is none; 422 as for
    /// creation).
    pub async fn update_pool(&self, cluster: &Cluster, name: &str, spec: &PoolSpec) -> Result<Pool> {
        self.save_pool(cluster, name, spec, true).await
    }

    /// Writes a pool (`replace`: the one of that name, which must exist; otherwise a new one,
    /// whose name must be free), giving the cluster a listener port on its first pool, and
    /// tells the poolers.
    async fn save_pool(&self, cluster: &Cluster, name: &str, spec: &PoolSpec, replace: bool) -> Result<Pool> {
        let mut tx = self.pool.begin().await?;
        let (first, last) = self.check_pool(&mut tx, cluster, replace.then_some(name), spec).await?;
        if replace {
            // Locked until the end (after the budget, as a create takes them), so that the pool
            // cannot be deleted in between.
            sqlx::query!(
                "select 1 as found from cluster_pools where cluster_id = $1 and name = $2 for update",
                cluster.cluster_id,
                name
            )
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound("pool"))?;
        }
        let port: Option<i32> =
            sqlx::query_scalar!("select port from pool_listeners where cluster_id = $1", cluster.cluster_id)
                .fetch_optional(&mut *tx)
                .await?;
        if port.is_none() {
            let free: Option<i32> = sqlx::query_scalar!(
                "select min(candidate)::int4 from generate_series($3::int4, $4::int4) candidate
                  where candidate not in (select port from pool_listeners
                                           where server_host = $1 and server_port = $2)",
                cluster.host,
                cluster.port,
                first,
                last
            )
            .fetch_one(&mut *tx)
            .await?;
            let free = free.ok_or_else(|| {
                Error::Invalid(format!(
                    "the pooler beside this cluster's server has no free port left ({first}-{last} are all in \
                     use by other clusters): give it a wider --ports range"
                ))
            })?;
            sqlx::query!(
                "insert into pool_listeners (cluster_id, server_host, server_port, port) values ($1, $2, $3, $4)",
                cluster.cluster_id,
                cluster.host,
                cluster.port,
                free
            )
            .execute(&mut *tx)
            .await?;
        }
        // A new pool is inserted, an existing one replaced (its generation moves on); a create
        // that meets an existing name writes nothing and finds no row.
        let pool = sqlx::query_as!(
            Pool,
            r#"insert into cluster_pools (cluster_id, name, mode, size, database_name, user_name)
               values ($1, $2, $3, $4, $5, $6)
               on conflict (cluster_id, name) do update
                  set mode = excluded.mode, size = excluded.size, database_name = excluded.database_name,
                      user_name = excluded.user_name, generation = cluster_pools.generation + 1, updated_at = now()
                where $7
               returning cluster_id, name, mode as "mode: PoolMode", size, database_name, user_name,
                         generation, applied_generation, last_error, created_at, updated_at"#,
            cluster.cluster_id,
            name,
            spec.mode as _,
            spec.size,
            spec.database_name,
            spec.user_name,
            replace
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::Conflict(format!("a pool named {name:?} already exists in this cluster")))?;
        announce(&mut tx, cluster.cluster_id).await?;
        tx.commit().await?;
        Ok(pool)
    }

    /// Deletes a pool (404 when there is none); its pooler stops serving it at once.
    pub async fn delete_pool(&self, cluster_id: Uuid, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let deleted =
            sqlx::query!("delete from cluster_pools where cluster_id = $1 and name = $2", cluster_id, name)
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound("pool"));
        }
        announce(&mut tx, cluster_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a pool's spec in `tx`, holding the server's pool budget until it ends, and
    /// returns the pooler's port range. `replacing`: the pool being updated (its size is not
    /// counted twice).
    async fn check_pool(
        &self,
        tx: &mut sqlx::PgConnection,
        cluster: &Cluster,
        replacing: Option<&str>,
        spec: &PoolSpec,
    ) -> Result<(i32, i32)> {
        let server = format!("{}:{}", cluster.host, cluster.port);
        // The budget is the server's, whatever names its clusters reach it by: counted over the
        // clusters of the same server identity.
        let server_id = cluster.server_id.as_deref().ok_or_else(|| {
            Error::Invalid(
                "this cluster's server is not identified yet: try again after its next reconcile pass".into(),
            )
        })?;
        sqlx::query!("select pg_advisory_xact_lock($1, hashtext($2))", POOL_BUDGET_LOCK, server_id)
            .execute(&mut *tx)
            .await?;
        let pooler = sqlx::query!(
            "select server_connections, team_share, port_first, port_last from poolers
              where server_host = $1 and server_port = $2",
            cluster.host,
            cluster.port
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no pooler serves this cluster's server ({server}): run `pgplane pooler --server {server}` \
                 beside it (see the README, Connection pools)"
            ))
        })?;
        // The user's row, then the database's, held until the end (the order every writer
        // takes rows in: ARCHITECTURE.md), so that neither is deleted meanwhile.
        let user = match &spec.user_name {
            Some(user) => Some((
                user,
                sqlx::query!(
                    r#"select state as "state: DesiredState", lease_seconds from cluster_users
                        where cluster_id = $1 and name = $2 for share"#,
                    cluster.cluster_id,
                    user
                )
                .fetch_optional(&mut *tx)
                .await?,
            )),
            None => None,
        };
        let database = sqlx::query_scalar!(
            r#"select state as "state: DesiredState" from cluster_databases
                where cluster_id = $1 and name = $2 for share"#,
            cluster.cluster_id,
            spec.database_name
        )
        .fetch_optional(&mut *tx)
        .await?;
        if database != Some(DesiredState::Present) {
            return Err(Error::Invalid(format!(
                "db {:?} is not a database of this cluster (or is being deleted)",
                spec.database_name
            )));
        }
        if let Some((user, found)) = user {
            match found {
                Some(u) if u.state == DesiredState::Present && u.lease_seconds.is_none() => {}
                Some(u) if u.state == DesiredState::Present => {
                    return Err(Error::Invalid(format!(
                        "user {user:?} is a lease: its credentials end, so it cannot be a pool's user"
                    )))
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "user {user:?} is not a user of this cluster (or is being deleted)"
                    )))
                }
            }
        }
        let used = sqlx::query!(
            r#"select coalesce(sum(p.size), 0) as "server!", coalesce(sum(p.size) filter (where c.team_id = $4), 0) as "team!"
                 from cluster_pools p
                 join clusters c on c.cluster_id = p.cluster_id
                where c.server_id = $1
                  and not (p.cluster_id = $2 and p.name = coalesce($3, ''))"#,
            server_id,
            cluster.cluster_id,
            replacing,
            cluster.team_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let size = i64::from(spec.size);
        let allowed = i64::from(pooler.server_connections);
        if used.server + size > allowed {
            return Err(Error::Invalid(format!(
                "size {size} is too large: this server's pools may use {allowed} server connections in all \
                 (max_connections less its reserved slots and the room kept for administration), and {} are \
                 given to pools already",
                used.server
            )));
        }
        let team_allowed = allowed * i64::from(pooler.team_share) / 100;
        if used.team + size > team_allowed {
            return Err(Error::Invalid(format!(
                "size {size} is too large: one team's pools may use {team_allowed} of this server's {allowed} pool \
                 connections ({}%), so that teams sharing the server cannot take them all, and your team's pools \
                 use {} already",
                pooler.team_share, used.team
            )));
        }
        Ok((pooler.port_first, pooler.port_last))
    }

    /// Records a pooler (or its heartbeat) when the server's row is free, its own, or left by a
    /// pooler silent for [`POOLER_LEASE_SECS`]; false when another live pooler holds it.
    pub async fn register_pooler(&self, pooler: &PoolerRegistration) -> Result<bool> {
        let held = sqlx::query_scalar!(
            r#"insert into poolers (server_host, server_port, advertise_host, port_first, port_last, server_connections,
                                  team_share, instance_id)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
             on conflict (server_host, server_port) do update
                set advertise_host = excluded.advertise_host, port_first = excluded.port_first,
                    port_last = excluded.port_last, server_connections = excluded.server_connections,
                    team_share = excluded.team_share, instance_id = excluded.instance_id, heartbeat_at = now()
              where poolers.instance_id is null or poolers.instance_id = excluded.instance_id
                 or poolers.heartbeat_at < now() - make_interval(secs => $9)
             returning true as "held!""#,
            pooler.server_host,
            pooler.server_port,
            pooler.advertise_host,
            pooler.port_first,
            pooler.port_last,
            pooler.server_connections,
            pooler.team_share,
            pooler.instance_id,
            POOLER_LEASE_SECS
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(held.is_some())
    }

    /// Gives up a pooler's row (it is stopping), so that the next pooler takes it at once. Its
    /// pools are still shown as served until the row's heartbeat ages.
    pub async fn release_pooler(&self, server_host: &str, server_port: i32, instance_id: Uuid) -> Result<()> {
        sqlx::query!(
            "update poolers set instance_id = null
              where server_host = $1 and server_port = $2 and instance_id = $3",
            server_host,
            server_port,
            instance_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The clusters registered at a pooler's server address that have a listener, with their
    /// pools (clusters whose pools are all gone included: their PgBouncer is stopped).
    pub async fn served_clusters(&self, server_host: &str, server_port: i32) -> Result<Vec<ServedCluster>> {
        let listeners = sqlx::query!(
            "select cluster_id, port from pool_listeners where server_host = $1 and server_port = $2",
            server_host,
            server_port
        )
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<Uuid> = listeners.iter().map(|l| l.cluster_id).collect();
        let pools = sqlx::query!(
            r#"select p.cluster_id, p.name, p.mode as "mode: PoolMode", p.size, p.database_name, p.user_name,
                      p.generation, p.applied_generation, p.last_error, p.created_at, p.updated_at,
                      d.state as "database_state: DesiredState",
                      (p.user_name is not null and u.state is distinct from $2) as "user_missing!"
                 from cluster_pools p
                 join cluster_databases d on (d.cluster_id, d.name) = (p.cluster_id, p.database_name)
                 left join cluster_users u on (u.cluster_id, u.name) = (p.cluster_id, p.user_name)
                where p.cluster_id = any($1) order by p.cluster_id, p.name"#,
            &ids,
            DesiredState::Present as _
        )
        .fetch_all(&self.pool)
        .await?;
        let mut served = Vec::new();
        for listener in listeners {
            let Some(cluster) = self.cluster_by_id(listener.cluster_id).await? else { continue };
            if cluster.host != server_host || cluster.port != server_port {
                continue;
            }
            let pools = pools
                .iter()
                .filter(|p| p.cluster_id == listener.cluster_id)
                .map(|p| ServedPool {
                    pool: Pool {
                        cluster_id: p.cluster_id,
                        name: p.name.clone(),
                        mode: p.mode,
                        size: p.size,
                        database_name: p.database_name.clone(),
                        user_name: p.user_name.clone(),
                        generation: p.generation,
                        applied_generation: p.applied_generation,
                        last_error: p.last_error.clone(),
                        created_at: p.created_at,
                        updated_at: p.updated_at,
                    },
                    database_leaving: p.database_state != DesiredState::Present,
                    user_missing: p.user_missing,
                })
                .collect();
            served.push(ServedCluster { cluster, port: listener.port, pools });
        }
        Ok(served)
    }

    /// Records what a pooler did with a cluster's pools: each pool's applied generation (only
    /// forward) and error.
    pub async fn report_pools(&self, cluster_id: Uuid, reports: &[PoolReport]) -> Result<()> {
        for report in reports {
            sqlx::query!(
                "update cluster_pools
                    set applied_generation = greatest(applied_generation, $3), last_error = $4
                  where cluster_id = $1 and name = $2
                    and (applied_generation < $3 or last_error is distinct from $4)",
                cluster_id,
                report.name,
                report.generation,
                report.error
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// Wakes the poolers when `tx` commits.
pub(crate) async fn announce(tx: &mut sqlx::PgConnection, cluster_id: Uuid) -> Result<()> {
    sqlx::query!("select pg_notify($1, $2)", POOLS_CHANNEL, cluster_id.to_string()).execute(&mut *tx).await?;
    Ok(())
}
