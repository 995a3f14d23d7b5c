//! API token rows: issue, look up, mark used, list and revoke. Revocations are announced on
//! the tokens channel so that gateways drop what they have cached at once.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, TOKENS_CHANNEL};
use crate::error::{Error, Result};
use crate::model::{ApiToken, TokenListing};
use crate::tokens::IssuedToken;

impl Store {
    /// Stores a newly issued token's hash.
    pub async fn insert_token(
        &self,
        team_id: Uuid,
        name: &str,
        issued: &IssuedToken,
        scopes: &[String],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "insert into api_tokens (token_id, team_id, name, secret_hash, scopes, expires_at)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&issued.token_id)
        .bind(team_id)
        .bind(name)
        .bind(&issued.hash)
        .bind(scopes)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token row that is neither revoked nor expired.
    pub async fn find_active_token(&self, token_id: &str) -> Result<Option<ApiToken>> {
        Ok(sqlx::query_as(
            "select * from api_tokens
              where token_id = $1 and revoked_at is null
                and (expires_at is null or expires_at > now())",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records that a token was used (at most once a minute, to keep reads cheap).
    pub async fn touch_token(&self, token_id: &str) -> Result<()> {
        sqlx::query(
            "update api_tokens set last_used_at = now()
              where token_id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
        )
        .bind(token_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every token with its team's name, newest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenListing>> {
        Ok(sqlx::query_as(
            "select t.*, teams.name as team_name from api_tokens t join teams using (team_id)
              order by t.created_at desc",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a token: it stops working at once on every gateway.
    pub async fn revoke_token(&self, token_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query(
            "update api_tokens set revoked_at = now() where token_id = $1 and revoked_at is null",
        )
        .bind(token_id)
        .execute(&mut *tx)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(Error::NotFound("active token"));
        }
        sqlx::query("select pg_notify($1, $2)").bind(TOKENS_CHANNEL).bind(token_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
