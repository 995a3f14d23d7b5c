//! Bearer-token authentication and authorisation. Tokens are stored only as argon2id hashes,
//! and verifying one costs tens of milliseconds of CPU, so a successful verification is
//! remembered for a short while under the SHA-256 of the token (never the token itself); later
//! requests with the same token skip argon2. Revocations are announced by the store and empty
//! the cache at once; expiry is checked on every request. Each operation needs a scope, derived
//! from its method and path in one place ([`required_scope`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use pgplane_core::scopes::{grants, Scope};
use pgplane_core::store::TOKENS_CHANNEL;
use pgplane_core::{tokens, Store};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified token is trusted without checking the store again.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Who is calling: the token, its team and scopes.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub team_id: Uuid,
    pub token_id: String,
    pub scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl Caller {
    /// Whether the token may act under `scope`.
    pub fn can(&self, scope: Scope) -> bool {
        grants(&self.scopes, scope)
    }

    /// Whether the token has full access (`*`), which some operations need beyond their scope.
    pub fn has_full_access(&self) -> bool {
        self.scopes.iter().any(|s| s == pgplane_core::scopes::FULL_ACCESS)
    }

    /// Whether answers may carry passwords.
    pub fn sees_credentials(&self) -> bool {
        self.can(Scope::ViewCredentials)
    }
}

/// Verifies bearer tokens against the store, with a short-lived cache of successes.
pub(crate) struct Authenticator {
    store: Store,
    verified: Cache<[u8; 32], Caller>,
    /// Bounds the argon2 verifications in flight to the number of cores: each takes a core
    /// and 19 MiB for tens of ms, and when a cached token expires (or a revocation empties the
    /// cache) every request in flight with it would otherwise verify it at once (64 requests:
    /// over 1 GiB).
    verifying: tokio::sync::Semaphore,
    /// Requests that missed the cache for the same token (same stripe of token keys) wait for
    /// one verification and then find the token cached, instead of verifying it side by side.
    same_token: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of `same_token`: different tokens rarely share one.
const TOKEN_STRIPES: usize = 64;

impl Authenticator {
    /// Creates the authenticator and starts the task that empties its cache on revocations.
    pub fn start(store: Store) -> Arc<Self> {
        let auth = Arc::new(Self {
            store: store.clone(),
            verified: Cache::builder().max_capacity(10_000).time_to_live(CACHE_TTL).build(),
            verifying: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            same_token: (0..TOKEN_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        });
        let weak = Arc::downgrade(&auth);
        tokio::spawn(async move {
            while weak.strong_count() > 0 {
                let listener = async {
                    let mut l = PgListener::connect_with(store.pool()).await?;
                    l.listen(TOKENS_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                if let Ok(mut listener) = listener.await {
                    // Whatever was missed while not listening may have been a revocation.
                    if let Some(auth) = weak.upgrade() {
                        auth.verified.invalidate_all();
                    }
                    while listener.recv().await.is_ok() {
                        let Some(auth) = weak.upgrade() else { return };
                        auth.verified.invalidate_all();
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        auth
    }

    /// The caller a token stands for, or 401.
    async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.cached(&key) {
            return cached;
        }
        let _same_token = self.same_token[usize::from(key[0]) % TOKEN_STRIPES].lock().await;
        if let Some(cached) = self.cached(&key) {
            return cached;
        }
        let _permit = self.verifying.acquire().await.map_err(|_| ApiError::internal())?;
        let token_id = tokens::token_id(token).ok_or_else(ApiError::unauthorized)?;
        let row = self.store.find_active_token(token_id).await?.ok_or_else(ApiError::unauthorized)?;
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
            expires_at: row.expires_at,
        };
        self.verified.insert(key, caller.clone());
        Ok(caller)
    }

    /// The cached verification of a token, if there is one (401 once the token expired).
    fn cached(&self, key: &[u8; 32]) -> Option<Result<Caller, ApiError>> {
        let caller = self.verified.get(key)?;
        if caller.expires_at.is_none_or(|at| at > Utc::now()) {
            return Some(Ok(caller));
        }
        self.verified.invalidate(key);
        Some(Err(ApiError::unauthorized()))
    }
}

/// Middleware: requires `Authorization: Bearer <token>`, applies the token's rate limit, and
/// makes the [`Caller`] available to the layers and handlers inside.
pub(crate) async fn authenticate(
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
    let quota = state.limiter.check(&caller.token_id)?;
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    quota.add_headers(response.headers_mut());
    Ok(response)
}

/// Middleware: refuses (403) a caller whose token lacks the operation's scope.
pub(crate) async fn authorize(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = request.extensions().get::<Caller>().ok_or_else(ApiError::unauthorized)?;
    let path = matched.as_ref().map_or("", |m| m.as_str());
    if !caller.can(required_scope(request.method(), path)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "You do not have permission to perform this action.",
        ));
    }
    Ok(next.run(request).await)
}

/// The scope an operation needs: reading needs `database:read`, creating `database:create`,
/// changing settings and resetting passwords `database:update`, deleting `database:delete`.
pub(crate) fn required_scope(method: &Method, path: &str) -> Scope {
    match *method {
        Method::GET | Method::HEAD => Scope::Read,
        Method::POST if path.ends_with("/reset_auth") => Scope::Update,
        Method::POST => Scope::Create,
        Method::PUT | Method::PATCH => Scope::Update,
        Method::DELETE => Scope::Delete,
        _ => Scope::Update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_maps_to_its_scope() {
        let users = "/v2/databases/{database_cluster_uuid}/users";
        assert_eq!(required_scope(&Method::GET, users), Scope::Read);
        assert_eq!(required_scope(&Method::POST, users), Scope::Create);
        assert_eq!(required_scope(&Method::POST, &format!("{users}/{{username}}/reset_auth")), Scope::Update);
        assert_eq!(required_scope(&Method::PUT, users), Scope::Update);
        assert_eq!(required_scope(&Method::DELETE, users), Scope::Delete);
    }
}
