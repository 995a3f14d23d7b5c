//! Trusted sources (`…/firewall`): the addresses allowed to log in through a cluster's pools,
//! replaced as a whole as DigitalOcean's `PUT` does, each rule keeping its id and creation time
//! while it stays.

use uuid::Uuid;

use super::pools::announce;
use super::Store;
use crate::error::Result;
use crate::model::FirewallRule;

/// A rule as a request gives it (its value already checked and written in canonical form).
#[derive(Debug, Clone)]
pub struct NewFirewallRule {
    pub value: String,
    pub description: Option<String>,
}

impl Store {
    /// A cluster's trusted sources, oldest first.
    pub async fn firewall_rules(&self, cluster_id: Uuid) -> Result<Vec<FirewallRule>> {
        Ok(sqlx::query_as!(
            FirewallRule,
            "select rule_id, cluster_id, type, value, description, created_at
               from cluster_firewall_rules where cluster_id = $1 order by created_at, value",
            cluster_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a cluster's trusted sources with `rules` (no two with the same value); the
    /// cluster's pooler applies them at once.
    pub async fn replace_firewall_rules(&self, cluster_id: Uuid, rules: &[NewFirewallRule]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        write_firewall_rules(&mut tx, cluster_id, rules).await?;
        announce(&mut tx, cluster_id).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Makes `rules` a cluster's trusted sources in `tx` (rules that stay keep their id and age).
pub(super) async fn write_firewall_rules(
    tx: &mut sqlx::PgConnection,
    cluster_id: Uuid,
    rules: &[NewFirewallRule],
) -> Result<()> {
    let values: Vec<String> = rules.iter().map(|r| r.value.clone()).collect();
    let descriptions: Vec<Option<String>> = rules.iter().map(|r| r.description.clone()).collect();
    sqlx::query!(
        "delete from cluster_firewall_rules where cluster_id = $1 and value <> all($2)",
        cluster_id,
        &values
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into cluster_firewall_rules (rule_id, cluster_id, type, value, description)
             select gen_random_uuid(), $1, 'ip_addr', r.value, r.description
               from unnest($2::text[], $3::text[]) as r(value, description)
             on conflict (cluster_id, value) do update set description = excluded.description",
        cluster_id,
        &values,
        &descriptions as &[Option<String>]
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
