//! API token rows: issue, look up, mark used, list and revoke.

use uuid::Uuid;

use super::Store;
use crate::error::Result;
use crate::model::ApiToken;
use crate::tokens::IssuedToken;

impl Store {
    /// Stores a newly issued token's hash.
    pub async fn insert_token(
        &self,
        team_id: Uuid,
        name: &str,
        issued: &IssuedToken,
        scopes: &[String],
    ) -> Result<()> {
        sqlx::query(
            "insert into api_tokens (token_id, team_id, name, secret_hash, scopes)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(&issued.token_id)
        .bind(team_id)
        .bind(name)
        .bind(&issued.hash)
        .bind(scopes)
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
}
