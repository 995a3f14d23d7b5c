//! Cluster rows: registration (with the primary user and default database every cluster has),
//! lookup scoped to a team, and unregistration. The cluster's lifecycle (status, generations,
//! retries) is `lifecycle::cluster`.

use uuid::Uuid;

use super::firewall::{write_firewall_rules, NewFirewallRule};
use super::{names_clash, notify, taken_on_server, Store, WAKE_CHANNEL};
use crate::error::{Error, Result};
use crate::lifecycle::{ClusterStatus, ObjectKind, SyncStatus, UserRole};
use crate::model::{Cluster, User};
use crate::passwords::Credentials;
use crate::secrets::Sealer;

/// The names a cluster holds on its server, checked against the other clusters there.
struct ServerRoles<'a> {
    primary_user: &'a str,
    admin_user: &'a str,
    default_database: &'a str,
}

/// Refuses (409) what would make two clusters on one server share a name: a primary user, an
/// admin role or a default database that another cluster there manages, or a primary user that
/// another cluster logs in as (two clusters may share the admin role, the server's superuser).
/// Gives a clear message before the write; the unique key of `server_names` is what makes it
/// hold under concurrency.
async fn check_server_names(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    server_id: &str,
    cluster_id: Option<Uuid>,
    names: ServerRoles<'_>,
) -> Result<()> {
    let taken = sqlx::query!(
        r#"select kind as "kind!", name as "name!" from server_names
            where server_id = $1 and cluster_id is distinct from $2
              and ((kind = 'role' and name in ($3, $4)) or (kind = 'database' and name = $5))
           union all
           select 'admin', admin_user from clusters
            where server_id = $1 and cluster_id is distinct from $2 and admin_user = $3
           limit 1"#,
        server_id,
        cluster_id,
        names.primary_user,
        names.admin_user,
        names.default_database
    )
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| (r.kind, r.name));
    match taken {
        None => Ok(()),
        Some((kind, name)) if kind == "admin" => Err(Error::Conflict(format!(
            "another cluster on this server logs in as the role {name:?}; it cannot be this \
             cluster's primary user"
        ))),
        Some((kind, name)) => Err(Error::Conflict(format!(
            "another cluster on this server already manages the {kind} {name:?}; give this \
             cluster names of its own"
        ))),
    }
}

/// Locks the rows of a cluster's users, then of its databases, each in name order, before a
/// writer of them all (a move, an unregistration) locks the cluster's row: the order every
/// writer takes (ARCHITECTURE.md, "The order rows are locked in"), so that it waits behind a
/// pass's end, a pool's creation or an access-level change instead of holding a row they need
/// next.
async fn hold_objects(tx: &mut sqlx::PgConnection, cluster_id: Uuid) -> Result<()> {
    sqlx::query!(
        "select (select count(*) from (select 1 from cluster_users where cluster_id = $1
                                        order by name for update) u)
              + (select count(*) from (select 1 from cluster_databases where cluster_id = $1
                                        order by name for update) d) as held",
        cluster_id
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(())
}

/// How pgplane logs in to a target as its admin: what a registration gives and the store
/// keeps (the password sealed at rest).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConnection {
    pub host: String,
    pub port: u16,
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
    // What pgplane makes on the server: its primary user and default database.
    pub primary_user: String,
    pub primary_credentials: Credentials,
    pub default_database: String,
    // The server, as the probe found it.
    pub admin: AdminConnection,
    /// The server's identity ([`crate::model::server_id`]).
    pub server_id: String,
    pub server_version_num: i32,
    pub server_version: String,
    // DigitalOcean's descriptions, kept and shown as given.
    pub region: String,
    pub size: String,
    pub num_nodes: i32,
    pub tags: Vec<String>,
    /// Its first trusted sources (DigitalOcean's create request takes them).
    pub rules: Vec<NewFirewallRule>,
}

/// A new admin connection for a registered cluster, already probed.
#[derive(Debug)]
pub struct TargetUpdate<'a> {
    pub admin: &'a AdminConnection,
    pub server_version_num: i32,
    pub server_version: &'a str,
    pub server_id: &'a str,
}

impl Store {
    /// Registers a cluster with its primary user and default database (both adopted if they
    /// already exist on the target) and wakes the reconcilers.
    pub async fn insert_cluster(&self, new: &NewCluster, sealer: &Sealer) -> Result<Cluster> {
        let cluster_id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let names = ServerRoles {
            primary_user: &new.primary_user,
            admin_user: &new.admin.user,
            default_database: &new.default_database,
        };
        check_server_names(&mut tx, &new.server_id, None, names).await?;
        let sealed = sealer.seal_str(&new.admin.password, &Cluster::admin_password_context(cluster_id));
        let inserted = sqlx::query_as!(
            Cluster,
            r#"insert into clusters (cluster_id, team_id, name, region, size, num_nodes, tags, host, port,
                                     admin_user, admin_password_sealed, admin_database, sslmode,
                                     primary_user, default_database, server_version_num, server_version,
                                     ca_certificate, server_id)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
               returning cluster_id, team_id, name, region, size, num_nodes, tags, host, port, admin_user,
                      admin_password_sealed, admin_database, sslmode, primary_user, default_database,
                      server_version_num, server_version, status as "status: ClusterStatus", generation,
                      reconciled_generation, last_error, last_reconciled_at, attempts, next_attempt_at,
                      created_at, updated_at, ca_certificate, last_resync_at, server_id,
                      null::int8 as listing_version"#,
            cluster_id,
            new.team_id,
            new.name,
            new.region,
            new.size,
            new.num_nodes,
            &new.tags,
            new.admin.host,
            i32::from(new.admin.port),
            new.admin.user,
            sealed,
            new.admin.database,
            new.admin.sslmode,
            new.primary_user,
            new.default_database,
            new.server_version_num,
            new.server_version,
            new.admin.ca_certificate,
            new.server_id
        )
        .fetch_one(&mut *tx)
        .await;
        let cluster = match inserted {
            Ok(c) => c,
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("clusters_team_id_name_key") => {
                return Err(Error::Invalid(format!("a cluster named {:?} already exists", new.name)));
            }
            Err(e) => return Err(e.into()),
        };
        let credentials = serde_json::to_vec(&new.primary_credentials).expect("serialisable");
        let sealed = sealer.seal(&credentials, &User::credentials_context(cluster_id, &new.primary_user));
        sqlx::query!(
            "insert into cluster_users (cluster_id, name, role, credentials_sealed, claimed)
             values ($1, $2, $3, $4, true)",
            cluster_id,
            new.primary_user,
            UserRole::Primary as _,
            sealed
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| taken_on_server(e, ObjectKind::User, &new.primary_user))?;
        sqlx::query!(
            "insert into cluster_databases (cluster_id, name, is_default, claimed)
             values ($1, $2, true, true)",
            cluster_id,
            new.default_database
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| taken_on_server(e, ObjectKind::Database, &new.default_database))?;
        write_firewall_rules(&mut tx, cluster_id, &new.rules).await?;
        Store::wake_server_neighbours(&mut tx, &new.server_id, cluster_id).await?;
        notify(&mut tx, WAKE_CHANNEL, cluster_id).await?;
        tx.commit().await?;
        Ok(cluster)
    }

    /// Why registering a cluster with these names on `server_id` would be refused (409) because
    /// another cluster there manages one of them, if it would be: the check registration makes,
    /// run alone (for a dry run; nothing is written).
    pub async fn server_names_conflict(
        &self,
        server_id: &str,
        primary_user: &str,
        admin_user: &str,
        default_database: &str,
    ) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let names = ServerRoles { primary_user, admin_user, default_database };
        let checked = check_server_names(&mut tx, server_id, None, names).await;
        tx.rollback().await?;
        match checked {
            Ok(()) => Ok(None),
            Err(Error::Conflict(why)) => Ok(Some(why)),
            Err(e) => Err(e),
        }
    }

    /// Replaces a cluster's admin connection (already probed) and retries its reconciliation
    /// at once, with a full pass (the new target may differ in anything). When the connection
    /// leads to another server (`moved`), the cluster's names are claimed on that server (409
    /// if another cluster there manages one of them) and nothing there counts as pgplane's
    /// until a pass creates or adopts it: every object is unclaimed but the primary user and
    /// the default database, which are adopted as at registration.
    pub async fn update_target(
        &self,
        cluster: &Cluster,
        update: &TargetUpdate<'_>,
        moved: bool,
        sealer: &Sealer,
    ) -> Result<()> {
        let admin = update.admin;
        let mut tx = self.pool.begin().await?;
        let names = ServerRoles {
            primary_user: &cluster.primary_user,
            admin_user: &admin.user,
            default_database: &cluster.default_database,
        };
        check_server_names(&mut tx, update.server_id, Some(cluster.cluster_id), names).await?;
        if moved {
            // Every object's row is rewritten below, after the cluster's.
            hold_objects(&mut tx, cluster.cluster_id).await?;
        }
        let sealed = sealer.seal_str(&admin.password, &Cluster::admin_password_context(cluster.cluster_id));
        sqlx::query!(
            "update clusters
                set host = $2, port = $3, admin_user = $4, admin_password_sealed = $5, admin_database = $6,
                    sslmode = $7, server_version_num = $8, server_version = $9, ca_certificate = $10,
                    server_id = $11, last_resync_at = null,
                    generation = generation + 1, attempts = 0, next_attempt_at = now(), updated_at = now()
              where cluster_id = $1
          returning pg_notify($12, cluster_id::text)::text",
            cluster.cluster_id,
            admin.host,
            i32::from(admin.port),
            admin.user,
            sealed,
            admin.database,
            admin.sslmode,
            update.server_version_num,
            update.server_version,
            admin.ca_certificate,
            update.server_id,
            WAKE_CHANNEL
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            names_clash(e, || {
                "another cluster on that server already manages one of this cluster's users or \
                 databases; nothing was changed"
                    .into()
            })
        })?;
        if moved {
            // Nothing on the new server is pgplane's until a pass creates or adopts it.
            let pending = SyncStatus::Pending;
            sqlx::query!(
                "update cluster_users
                    set claimed = (role = $2), generation = generation + 1, updated_at = now(),
                        sync_status = $3, last_error = null
                  where cluster_id = $1",
                cluster.cluster_id,
                UserRole::Primary as _,
                pending as _
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "update cluster_databases
                    set claimed = is_default, closed_to_public = false, generation = generation + 1,
                        updated_at = now(), sync_status = $2, last_error = null
                  where cluster_id = $1",
                cluster.cluster_id,
                pending as _
            )
            .execute(&mut *tx)
            .await?;
            Store::wake_server_neighbours(&mut tx, update.server_id, cluster.cluster_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the identity of the server a cluster registered before pgplane recorded it
    /// turns out to be (its names are claimed there at the same time); a conflict with another
    /// cluster on that server is an error for the cluster, and nothing is recorded.
    pub async fn learn_server_id(&self, cluster_id: Uuid, server_id: &str) -> Result<()> {
        sqlx::query!(
            "update clusters set server_id = $2 where cluster_id = $1 and server_id is null",
            cluster_id,
            server_id
        )
        .execute(&self.pool)
        .await
        .map_err(|e| {
            names_clash(e, || {
                "another cluster registered on the same server manages one of this cluster's \
                     users or databases: pgplane changes nothing on the server until that is resolved"
                    .into()
            })
        })?;
        Ok(())
    }

    /// Whether no other cluster is registered on `cluster`'s server (false while its server's
    /// identity is unknown).
    pub async fn alone_on_server(&self, cluster: &Cluster) -> Result<bool> {
        let Some(server_id) = cluster.server_id.as_deref() else { return Ok(false) };
        Ok(sqlx::query_scalar!(
            r#"select not exists (select 1 from clusters where server_id = $1 and cluster_id <> $2) as "alone!""#,
            server_id,
            cluster.cluster_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The role and database names other clusters on `server_id` manage or log in as (their
    /// objects and their admin roles): never shown as "unmanaged" to this cluster's team.
    pub async fn names_of_other_clusters(
        &self,
        server_id: &str,
        cluster_id: Uuid,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let rows: Vec<(String, String)> = sqlx::query!(
            r#"select kind as "kind!", name as "name!" from server_names where server_id = $1 and cluster_id <> $2
               union
               select 'role', admin_user from clusters where server_id = $1 and cluster_id <> $2"#,
            server_id,
            cluster_id
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.kind, r.name))
        .collect();
        let (roles, databases): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(kind, _)| kind == "role");
        Ok((roles.into_iter().map(|r| r.1).collect(), databases.into_iter().map(|d| d.1).collect()))
    }

    /// A team's clusters, optionally only those carrying `tag`, oldest first.
    pub async fn list_clusters(&self, team_id: Uuid, tag: Option<&str>) -> Result<Vec<Cluster>> {
        Ok(select_rows!(
            Cluster,
            ["where team_id = $1 and ($2::text is null or $2 = any(tags)) order by created_at, name"],
            team_id,
            tag
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One of a team's clusters; another team's cluster is "not found".
    pub async fn get_cluster(&self, team_id: Uuid, cluster_id: Uuid) -> Result<Cluster> {
        select_rows!(Cluster, ["where cluster_id = $1 and team_id = $2"], cluster_id, team_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("database cluster"))
    }

    /// A cluster by id alone (for the reconciler, which works for every team).
    pub async fn cluster_by_id(&self, cluster_id: Uuid) -> Result<Option<Cluster>> {
        Ok(select_rows!(Cluster, ["where cluster_id = $1"], cluster_id).fetch_optional(&self.pool).await?)
    }

    /// The oldest cluster registered at a server address, if any (what a pooler beside that
    /// server reads it with before any cluster there has a pool).
    pub async fn first_cluster_at(&self, host: &str, port: i32) -> Result<Option<Cluster>> {
        Ok(select_rows!(Cluster, ["where host = $1 and port = $2 order by created_at limit 1"], host, port)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Unregisters a cluster (its objects' rows go with it). Nothing on the target is touched.
    pub async fn delete_cluster(&self, team_id: Uuid, cluster_id: Uuid) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let owned = sqlx::query_scalar!(
            r#"select true as "owned!" from clusters where cluster_id = $1 and team_id = $2"#,
            cluster_id,
            team_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_none() {
            return Err(Error::NotFound("database cluster"));
        }
        hold_objects(&mut tx, cluster_id).await?;
        let deleted =
            sqlx::query!("delete from clusters where cluster_id = $1 and team_id = $2", cluster_id, team_id)
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound("database cluster"));
        }
        tx.commit().await?;
        Ok(())
    }
}
