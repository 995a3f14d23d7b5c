//! Cluster rows: registration (with the primary user and default database every cluster has),
//! lookup scoped to a team, and unregistration.

use uuid::Uuid;

use super::{notify, Store, BUMP, WAKE_CHANNEL};
use crate::error::{Error, Result};
use crate::model::{Cluster, User};
use crate::passwords::Credentials;
use crate::secrets::Sealer;

/// How pgplane logs in to a target as its admin.
pub struct AdminConnection {
    pub host: String,
    pub port: i32,
    pub user: String,
    pub password: String,
    pub database: String,
    pub sslmode: String,
    /// PEM of the CA for `verify-full`.
    pub ca_certificate: Option<String>,
}

impl std::fmt::Debug for AdminConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminConnection({}@{}:{}/{})", self.user, self.host, self.port, self.database)
    }
}

/// Everything needed to register a cluster. The caller has validated it and probed the target.
#[derive(Debug)]
pub struct NewCluster {
    pub team_id: Uuid,
    pub name: String,
    pub region: String,
    pub size: String,
    pub num_nodes: i32,
    pub tags: Vec<String>,
    pub admin: AdminConnection,
    pub primary_user: String,
    pub primary_credentials: Credentials,
    pub default_database: String,
    pub server_version_num: i32,
    pub server_version: String,
}

impl Store {
    /// Registers a cluster with its primary user and default database (both adopted if they
    /// already exist on the target) and wakes the reconcilers.
    pub async fn insert_cluster(&self, new: &NewCluster, sealer: &Sealer) -> Result<Cluster> {
        let cluster_id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query_as::<_, Cluster>(
            "insert into clusters (cluster_id, team_id, name, region, size, num_nodes, tags, host, port,
                                   admin_user, admin_password_sealed, admin_database, sslmode,
                                   primary_user, default_database, server_version_num, server_version,
                                   ca_certificate)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             returning *",
        )
        .bind(cluster_id)
        .bind(new.team_id)
        .bind(&new.name)
        .bind(&new.region)
        .bind(&new.size)
        .bind(new.num_nodes)
        .bind(&new.tags)
        .bind(&new.admin.host)
        .bind(new.admin.port)
        .bind(&new.admin.user)
        .bind(sealer.seal_str(&new.admin.password, &Cluster::admin_password_context(cluster_id)))
        .bind(&new.admin.database)
        .bind(&new.admin.sslmode)
        .bind(&new.primary_user)
        .bind(&new.default_database)
        .bind(new.server_version_num)
        .bind(&new.server_version)
        .bind(&new.admin.ca_certificate)
        .fetch_one(&mut *tx)
        .await;
        let cluster = match inserted {
            Ok(c) => c,
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("clusters_team_id_name_key") => {
                return Err(Error::Invalid(format!("a cluster named {:?} already exists", new.name)));
            }
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("clusters_target_primary_user") => {
                return Err(Error::Conflict(format!(
                    "the server {}:{} is already registered with primary user {:?}",
                    new.admin.host, new.admin.port, new.primary_user
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let credentials = serde_json::to_vec(&new.primary_credentials).expect("serialisable");
        sqlx::query(
            "insert into cluster_users (cluster_id, name, role, credentials_sealed, claimed)
             values ($1, $2, 'primary', $3, true)",
        )
        .bind(cluster_id)
        .bind(&new.primary_user)
        .bind(sealer.seal(&credentials, &User::credentials_context(cluster_id, &new.primary_user)))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into cluster_databases (cluster_id, name, is_default, claimed)
             values ($1, $2, true, true)",
        )
        .bind(cluster_id)
        .bind(&new.default_database)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, WAKE_CHANNEL, cluster_id).await?;
        tx.commit().await?;
        Ok(cluster)
    }

    /// Replaces a cluster's admin connection (already probed) and retries its reconciliation
    /// at once, with a full pass (the new target may differ in anything).
    pub async fn update_target(
        &self,
        cluster: &Cluster,
        admin: &AdminConnection,
        server_version: (i32, &str),
        sealer: &Sealer,
    ) -> Result<()> {
        let updated = sqlx::query(&format!(
            "update clusters
                set host = $2, port = $3, admin_user = $4, admin_password_sealed = $5, admin_database = $6,
                    sslmode = $7, server_version_num = $8, server_version = $9, ca_certificate = $10,
                    last_resync_at = null, {BUMP}
              where cluster_id = $1
          returning pg_notify('{WAKE_CHANNEL}', cluster_id::text)::text"
        ))
        .bind(cluster.cluster_id)
        .bind(&admin.host)
        .bind(admin.port)
        .bind(&admin.user)
        .bind(sealer.seal_str(&admin.password, &Cluster::admin_password_context(cluster.cluster_id)))
        .bind(&admin.database)
        .bind(&admin.sslmode)
        .bind(server_version.0)
        .bind(server_version.1)
        .bind(&admin.ca_certificate)
        .execute(&self.pool)
        .await;
        match updated {
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("clusters_target_primary_user") => {
                Err(Error::Conflict(format!(
                    "the server {}:{} is already registered with primary user {:?}",
                    admin.host, admin.port, cluster.primary_user
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// A team's clusters, optionally only those carrying `tag`, oldest first.
    pub async fn list_clusters(&self, team_id: Uuid, tag: Option<&str>) -> Result<Vec<Cluster>> {
        Ok(sqlx::query_as(
            "select * from clusters
              where team_id = $1 and ($2::text is null or $2 = any(tags))
              order by created_at, name",
        )
        .bind(team_id)
        .bind(tag)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One of a team's clusters; another team's cluster is "not found".
    pub async fn get_cluster(&self, team_id: Uuid, cluster_id: Uuid) -> Result<Cluster> {
        sqlx::query_as("select * from clusters where cluster_id = $1 and team_id = $2")
            .bind(cluster_id)
            .bind(team_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("database cluster"))
    }

    /// A cluster by id alone (for the reconciler, which works for every team).
    pub async fn cluster_by_id(&self, cluster_id: Uuid) -> Result<Option<Cluster>> {
        Ok(sqlx::query_as("select * from clusters where cluster_id = $1")
            .bind(cluster_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Unregisters a cluster. Nothing on the target is touched.
    pub async fn delete_cluster(&self, team_id: Uuid, cluster_id: Uuid) -> Result<()> {
        let deleted = sqlx::query("delete from clusters where cluster_id = $1 and team_id = $2")
            .bind(cluster_id)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound("database cluster"));
        }
        Ok(())
    }
}
