//! Bearer-token authentication. Tokens are stored only as argon2id hashes, and verifying one
//! costs tens of milliseconds of CPU, so a successful verification is remembered for a short
//! while under the SHA-256 of the token (never the token itself); later requests with the same
//! token skip argon2. Revoked or expired tokens stop working when that entry expires.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use moka::sync::Cache;
use pgplane_core::{tokens, Store};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified token is trusted without checking the store again.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Who is calling: the token's team and scopes.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub team_id: Uuid,
    #[allow(dead_code)]
    pub token_id: String,
    #[allow(dead_code)]
    pub scopes: Vec<String>,
}

/// Verifies bearer tokens against the store, with a short-lived cache of successes.
pub(crate) struct Authenticator {
    store: Store,
    verified: Cache<[u8; 32], Caller>,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            verified: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }

    /// The caller a token stands for, or 401.
    async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self.verified.get(&key) {
            return Ok(caller);
        }
        let token_id = tokens::token_id(token).ok_or_else(ApiError::unauthorized)?;
        let row = self
            .store
            .find_active_token(token_id)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let (token_owned, hash) = (token.to_owned(), row.secret_hash.clone());
        let valid = tokio::task::spawn_blocking(move || tokens::verify(&token_owned, &hash))
            .await
            .map_err(|_| ApiError::internal())?;
        if !valid {
            return Err(ApiError::unauthorized());
        }
        let store = self.store.clone();
        let id = row.token_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&id).await {
                tracing::debug!(error = %e, "cannot record token use");
            }
        });
        let caller = Caller {
            team_id: row.team_id,
            token_id: row.token_id,
            scopes: row.scopes,
        };
        self.verified.insert(key, caller.clone());
        Ok(caller)
    }
}

/// Middleware: requires `Authorization: Bearer <token>` and makes the [`Caller`] available to
/// handlers.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .ok_or_else(ApiError::unauthorized)?;
    let caller = state.auth.authenticate(&token).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
