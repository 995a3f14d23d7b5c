//! Key rotation: re-seals every secret in the metadata store under a new key, in one
//! transaction, so that a dump taken afterwards opens only with the new key.

use uuid::Uuid;

use super::Store;
use crate::error::Result;
use crate::model::{Cluster, User};
use crate::secrets::Sealer;

impl Store {
    /// Opens every sealed secret with `from` and seals it again with `to`. Returns how many
    /// secrets were re-sealed. Nothing changes if any secret fails to open.
    pub async fn reseal_all(&self, from: &Sealer, to: &Sealer) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let clusters: Vec<(Uuid, Vec<u8>)> =
            sqlx::query_as("select cluster_id, admin_password_sealed from clusters for update")
                .fetch_all(&mut *tx)
                .await?;
        for (id, sealed) in &clusters {
            let context = Cluster::admin_password_context(*id);
            let plain = from.open(sealed, &context)?;
            sqlx::query("update clusters set admin_password_sealed = $2 where cluster_id = $1")
                .bind(id)
                .bind(to.seal(&plain, &context))
                .execute(&mut *tx)
                .await?;
        }
        let users: Vec<(Uuid, String, Vec<u8>)> =
            sqlx::query_as("select cluster_id, name, credentials_sealed from cluster_users for update")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name, sealed) in &users {
            let context = User::credentials_context(*id, name);
            let plain = from.open(sealed, &context)?;
            sqlx::query(
                "update cluster_users set credentials_sealed = $3 where cluster_id = $1 and name = $2",
            )
            .bind(id)
            .bind(name)
            .bind(to.seal(&plain, &context))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(clusters.len() + users.len())
    }
}
