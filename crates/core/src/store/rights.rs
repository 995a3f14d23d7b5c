//! Database rights on shared servers, in the metadata store: whether a cluster shares its
//! server with another, the roles of a cluster that may connect to its databases, which of its
//! databases have been closed to PUBLIC, and waking a server's cluster when it becomes shared.

use uuid::Uuid;

use super::{Store, WAKE_CHANNEL};
use crate::error::Result;
use crate::lifecycle::{DesiredState, SyncStatus};

/// What a pass needs to bring a shared server's databases in line.
#[derive(Debug, Default, Clone)]
pub struct SharedRights {
    /// The cluster's users pgplane created or adopted (the primary user included) that are
    /// meant to exist.
    pub users: Vec<String>,
    /// The cluster's databases pgplane created or adopted that are meant to exist, and whether
    /// each has been closed to PUBLIC already.
    pub databases: Vec<(String, bool)>,
}

impl Store {
    /// Whether another cluster is registered on the server `server_id`.
    pub async fn shares_server(&self, cluster_id: Uuid, server_id: &str) -> Result<bool> {
        Ok(sqlx::query_scalar!(
            r#"select exists (select 1 from clusters where server_id = $1 and cluster_id <> $2) as "shared!""#,
            server_id,
            cluster_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The users and databases of a cluster that a pass on a shared server keeps in line.
    pub async fn shared_rights(&self, cluster_id: Uuid) -> Result<SharedRights> {
        // One filter for both kinds: claimed, meant to exist and not in conflict.
        let rows = sqlx::query!(
            r#"select o.is_user as "is_user!", o.name as "name!", o.closed_to_public as "closed_to_public!"
                 from (select cluster_id, name, state, claimed, sync_status, true as is_user,
                              false as closed_to_public
                         from cluster_users
                       union all
                       select cluster_id, name, state, claimed, sync_status, false, closed_to_public
                         from cluster_databases) as o
                where o.cluster_id = $1 and o.state = $2 and o.claimed and o.sync_status <> $3
                order by o.name"#,
            cluster_id,
            DesiredState::Present as _,
            SyncStatus::Conflict as _
        )
        .fetch_all(&self.pool)
        .await?;
        let (users, databases): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.is_user);
        let users = users.into_iter().map(|u| u.name).collect();
        let databases = databases.into_iter().map(|d| (d.name, d.closed_to_public)).collect();
        Ok(SharedRights { users, databases })
    }

    /// Wakes the cluster already on `server_id` for a full pass when `cluster_id` joining the
    /// server makes it shared: its databases are closed to PUBLIC at once. On a server shared
    /// already, every pass keeps the databases closed: nobody needs waking.
    pub(super) async fn wake_server_neighbours(
        tx: &mut sqlx::PgConnection,
        server_id: &str,
        cluster_id: Uuid,
    ) -> Result<()> {
        sqlx::query!(
            "update clusters
                set last_resync_at = null,
                    generation = generation + 1, attempts = 0, next_attempt_at = now(), updated_at = now()
              where server_id = $1 and cluster_id <> $2
                and (select count(*) from clusters where server_id = $1 and cluster_id <> $2) = 1
          returning pg_notify($3, cluster_id::text)::text",
            server_id,
            cluster_id,
            WAKE_CHANNEL
        )
        .fetch_all(tx)
        .await?;
        Ok(())
    }
}
