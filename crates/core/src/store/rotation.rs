//! Key rotation: re-seals every secret in the metadata store under a new key. Running servers
//! keep writing meanwhile, so rotation works in rounds: each round re-seals the values that are
//! not yet under the new key (sealed values name their key, see `secrets`), each value with a
//! compare-and-swap so that a value rewritten meanwhile (a password reset) is never overwritten
//! with the old plaintext; it ends when a round finds none left. A value that opens with
//! neither key is reported by the object it belongs to and left as it is.

use std::collections::HashSet;

use uuid::Uuid;

use super::Store;
use crate::error::{Error, Result};
use crate::model::{Cluster, User};
use crate::secrets::Sealer;

/// Rounds after which rotation gives up because values are still being sealed under another
/// key (some pgplane still runs with the old key as its current one).
const MAX_ROUNDS: usize = 20;

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rotation {
    /// Values re-sealed under the new key.
    pub resealed: usize,
    /// The objects whose sealed value opened with neither key ("cluster <id>: admin password",
    /// "cluster <id>: user <name>"), left unchanged.
    pub unopenable: Vec<String>,
}

/// One sealed value: where it lives and what it is.
struct SealedRow {
    cluster_id: Uuid,
    /// The user's name; None for the cluster's admin password.
    user: Option<String>,
    /// A user's other login's credentials (`other_credentials_sealed`), not its current ones.
    other: bool,
    sealed: Vec<u8>,
}

impl SealedRow {
    fn context(&self) -> String {
        match &self.user {
            None => Cluster::admin_password_context(self.cluster_id),
            Some(name) if self.other => User::other_credentials_context(self.cluster_id, name),
            Some(name) => User::credentials_context(self.cluster_id, name),
        }
    }

    fn describe(&self) -> String {
        match &self.user {
            None => format!("cluster {}: admin password", self.cluster_id),
            Some(name) if self.other => format!("cluster {}: user {name:?} (other login)", self.cluster_id),
            Some(name) => format!("cluster {}: user {name:?}", self.cluster_id),
        }
    }
}

impl Store {
    /// Re-seals every sealed secret under `to`, opening each with `from` (or `to`).
    pub async fn reseal_all(&self, from: &Sealer, to: &Sealer) -> Result<Rotation> {
        let prefix = to.sealed_prefix();
        let mut rotation = Rotation::default();
        let mut unopenable = HashSet::new();
        for _ in 0..MAX_ROUNDS {
            let pending: Vec<SealedRow> = self
                .not_under(&prefix)
                .await?
                .into_iter()
                .filter(|row| !unopenable.contains(&row.describe()))
                .collect();
            if pending.is_empty() {
                rotation.unopenable = unopenable.into_iter().collect();
                rotation.unopenable.sort();
                return Ok(rotation);
            }
            for row in pending {
                let context = row.context();
                match from.open(&row.sealed, &context).or_else(|_| to.open(&row.sealed, &context)) {
                    Ok(plain) => {
                        if self.swap_sealed(&row, &to.seal(&plain, &context)).await? {
                            rotation.resealed += 1;
                        }
                    }
                    Err(_) => {
                        tracing::warn!(object = %row.describe(), "a sealed secret opens with neither key");
                        unopenable.insert(row.describe());
                    }
                }
            }
        }
        Err(Error::Conflict(format!(
            "secrets are still being sealed under another key after {MAX_ROUNDS} rounds: run every \
             pgplane with the new key (and the old one as --previous-secret-key-file) before rotating"
        )))
    }

    /// Every sealed value that does not begin with `prefix` (is not under the new key).
    async fn not_under(&self, prefix: &[u8]) -> Result<Vec<SealedRow>> {
        let rows = sqlx::query!(
            r#"select cluster_id as "cluster_id!", null::text as "user?", false as "other!",
                      admin_password_sealed as "sealed!"
                 from clusters
                where substring(admin_password_sealed from 1 for $2) is distinct from $1
               union all
               select cluster_id, name, false, credentials_sealed from cluster_users
                where substring(credentials_sealed from 1 for $2) is distinct from $1
               union all
               select cluster_id, name, true, other_credentials_sealed from cluster_users
                where other_credentials_sealed is not null
                  and substring(other_credentials_sealed from 1 for $2) is distinct from $1"#,
            prefix,
            prefix.len() as i32
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| SealedRow { cluster_id: r.cluster_id, user: r.user, other: r.other, sealed: r.sealed })
            .collect())
    }

    /// Replaces a sealed value if it is still the one read; false when it changed meanwhile
    /// (the next round sees the new value).
    async fn swap_sealed(&self, row: &SealedRow, resealed: &[u8]) -> Result<bool> {
        let done = match &row.user {
            None => {
                sqlx::query!(
                    "update clusters set admin_password_sealed = $3
                      where cluster_id = $1 and admin_password_sealed = $2",
                    row.cluster_id,
                    row.sealed,
                    resealed
                )
                .execute(&self.pool)
                .await?
            }
            Some(name) => {
                // The current credentials, or the other login's: the same compare-and-swap.
                sqlx::query!(
                    "update cluster_users
                        set credentials_sealed = case when $5 then credentials_sealed else $4 end,
                            other_credentials_sealed = case when $5 then $4 else other_credentials_sealed end
                      where cluster_id = $1 and name = $2
                        and case when $5 then other_credentials_sealed else credentials_sealed end = $3",
                    row.cluster_id,
                    name,
                    row.sealed,
                    resealed,
                    row.other
                )
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }
}
