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
        sqlx::query!(
            "insert into api_tokens (token_id, team_id, name, secret_hash, scopes, expires_at)
             values ($1, $2, $3, $4, $5, $6)",
            issued.token_id,
            team_id,
            name,
            issued.hash,
            scopes,
            expires_at
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token row that is neither revoked nor expired.
    pub async fn find_active_token(&self, token_id: &str) -> Result<Option<ApiToken>> {
        Ok(sqlx::query_as!(
            ApiToken,
            "select token_id, team_id, name, secret_hash, scopes, created_at, expires_at, last_used_at, revoked_at
               from api_tokens
              where token_id = $1 and revoked_at is null
                and (expires_at is null or expires_at > now())",
            token_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records that a token was used (at most once a minute, to keep reads cheap).
    pub async fn touch_token(&self, token_id: &str) -> Result<()> {
        sqlx::query!(
            "update api_tokens set last_used_at = now()
              where token_id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
            token_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every token with its team's name, newest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenListing>> {
        Ok(sqlx::query!(
            r#"select t.token_id, t.team_id, t.name, t.secret_hash, t.scopes, t.created_at, t.expires_at,
                      t.last_used_at, t.revoked_at, teams.name as team_name
                 from api_tokens t join teams using (team_id)
                order by t.created_at desc"#
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|t| TokenListing {
            token: ApiToken {
                token_id: t.token_id,
                team_id: t.team_id,
                name: t.name,
                secret_hash: t.secret_hash,
                scopes: t.scopes,
                created_at: t.created_at,
                expires_at: t.expires_at,
                last_used_at: t.last_used_at,
                revoked_at: t.revoked_at,
            },
            team_name: t.team_name,
        })
        .collect())
    }

    /// Revokes a token: it stops working at once on every gateway.
    pub async fn revoke_token(&self, token_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query!(
            "update api_tokens set revoked_at = now() where token_id = $1 and revoked_at is null",
            token_id
        )
        .execute(&mut *tx)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(Error::NotFound("active token"));
        }
        sqlx::query!("select pg_notify($1, $2) as notified", TOKENS_CHANNEL, token_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
