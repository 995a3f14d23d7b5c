//! Bearer-token authentication and authorisation. Tokens are stored only as argon2id hashes,
//! and verifying one costs tens of milliseconds of CPU, so a successful verification is
//! remembered under the SHA-256 of the token (never the token itself); later requests with the
//! same token skip argon2. A token that failed is remembered the same way and refused at once,
//! and failures are limited per client address and per token id before any lookup
//! ([`crate::failures`]). Each operation needs a scope, derived from its method and path in one
//! place ([`required_scope`]).
//!
//! Revocation is immediate on every process: the store announces each revocation on a channel
//! this module LISTENs on, and every announcement, and every (re)connection of the listener,
//! bumps an epoch. A cached verification is trusted only while the listener is connected, its
//! epoch is current and its row was read less than [`RECHECK_AFTER`] ago; otherwise one cheap
//! read of the token row (never argon2) confirms it. A verification that ran while the epoch
//! moved confirms its row again before answering and is not cached.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use pgplane_core::model::ApiToken;
use pgplane_core::notifications::Event;
use pgplane_core::scopes::{grants, Scope};
use pgplane_core::store::TOKENS_CHANNEL;
use pgplane_core::{tokens, Store};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::query_pairs;
use crate::failures::{FailureLimiter, FailureLimits};
use crate::state::AppState;

/// How long a cached verification is trusted before its row is read again (the backstop for
/// changes that are not announced, such as an expiry moved earlier).
const RECHECK_AFTER: Duration = Duration::from_secs(30);
/// How long a token that failed is refused without looking at it again. Tokens never become
/// valid after failing once (secrets do not change, revocations are final).
const REJECTED_TTL: Duration = Duration::from_secs(600);

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

    /// When the token stops working (None: never).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
}

/// A successful verification as the cache keeps it.
#[derive(Clone)]
struct Verified {
    caller: Caller,
    /// The stored hash the token was verified against: a row check compares it, and skips
    /// argon2.
    secret_hash: Arc<str>,
    /// The revocation epoch before the row was read.
    epoch: u64,
    /// When the row was read.
    read_at: Instant,
}

/// Verifies bearer tokens against the store, with a cache of successes and one of failures.
pub(crate) struct Authenticator {
    store: Store,
    verified: Cache<[u8; 32], Verified>,
    rejected: Cache<[u8; 32], ()>,
    failures: FailureLimiter,
    /// Bumped by every revocation announcement and every (re)connection of the listener.
    epoch: AtomicU64,
    /// Whether the listener is connected (announcements can arrive).
    listening: AtomicBool,
    /// Bounds the argon2 verifications in flight to the number of cores: each takes a core
    /// and 19 MiB for tens of ms, and when many requests with uncached tokens arrive at once
    /// they would otherwise all verify at once (64 requests: over 1 GiB).
    verifying: tokio::sync::Semaphore,
    /// Requests that missed the cache for the same token (same stripe of token keys) wait for
    /// one verification and then find the token cached, instead of verifying it side by side.
    same_token: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of `same_token`: different tokens rarely share one.
const TOKEN_STRIPES: usize = 64;

impl Authenticator {
    /// Creates the authenticator and starts the task that follows revocations.
    pub fn start(store: Store, limits: FailureLimits) -> Arc<Self> {
        let auth = Arc::new(Self {
            store: store.clone(),
            verified: Cache::builder().max_capacity(10_000).time_to_idle(Duration::from_secs(600)).build(),
            rejected: Cache::builder().max_capacity(100_000).time_to_live(REJECTED_TTL).build(),
            failures: FailureLimiter::new(limits, Some(store.clone())),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            verifying: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            same_token: (0..TOKEN_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        });
        let notifications = store.notifications();
        let events = notifications.subscribe();
        auth.listening.store(notifications.is_connected(), Ordering::SeqCst);
        tokio::spawn(follow_revocations(Arc::downgrade(&auth), events));
        let weak = Arc::downgrade(&auth);
        tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                let Some(auth) = weak.upgrade() else { return };
                auth.failures.forget_quiet().await;
            }
        });
        auth
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Marks everything cached so far as needing a row check.
    fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The caller a token stands for; 401, or 429 after too many failures.
    async fn authenticate(&self, token: &str, address: IpAddr) -> Result<Caller, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(found) = self.verified.get(&key) {
            crate::metrics::token_cache(true);
            return self.confirm(key, found).await;
        }
        crate::metrics::token_cache(false);
        if self.rejected.contains_key(&key) {
            return Err(ApiError::unauthorized());
        }
        let token_id = tokens::token_id(token).ok_or_else(ApiError::unauthorized)?;
        self.failures.admit(address, token_id).await?;
        let _same_token = self.same_token[usize::from(key[0]) % TOKEN_STRIPES].lock().await;
        if let Some(found) = self.verified.get(&key) {
            return self.confirm(key, found).await;
        }
        if self.rejected.contains_key(&key) {
            return Err(ApiError::unauthorized());
        }
        let _permit = self.verifying.acquire().await.map_err(|_| ApiError::internal())?;
        // Failures recorded while this request queued count too.
        self.failures.admit(address, token_id).await?;
        let epoch = self.epoch();
        let Some(row) = self.store.find_active_token(token_id).await? else {
            self.reject(key, address, None).await;
            return Err(ApiError::unauthorized());
        };
        let (token_owned, hash) = (token.to_owned(), row.secret_hash.clone());
        let valid = tokio::task::spawn_blocking(move || tokens::verify(&token_owned, &hash))
            .await
            .map_err(|_| ApiError::internal())?;
        if !valid {
            self.reject(key, address, Some(token_id)).await;
            return Err(ApiError::unauthorized());
        }
        let store = self.store.clone();
        let id = row.token_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&id).await {
                tracing::debug!(error = %e, "cannot record token use");
            }
        });
        let verified = Verified::from_row(row, epoch);
        if self.epoch() != epoch {
            // A revocation (or a gap in listening) landed while verifying: the row read may
            // predate it. Read it again; the result is cached only if the epoch holds still.
            return self.check_row(key, verified).await;
        }
        self.verified.insert(key, verified.clone());
        Ok(verified.caller)
    }

    /// A cached verification, trusted as it is or confirmed by a row check.
    async fn confirm(&self, key: [u8; 32], found: Verified) -> Result<Caller, ApiError> {
        if found.caller.expires_at.is_some_and(|at| at <= Utc::now()) {
            self.verified.invalidate(&key);
            return Err(ApiError::unauthorized());
        }
        let trusted = self.listening.load(Ordering::SeqCst)
            && found.epoch == self.epoch()
            && found.read_at.elapsed() < RECHECK_AFTER;
        if trusted {
            return Ok(found.caller);
        }
        self.check_row(key, found).await
    }

    /// Reads the token row again: the token still stands if the row is active and holds the
    /// hash it was verified against. No argon2.
    async fn check_row(&self, key: [u8; 32], verified: Verified) -> Result<Caller, ApiError> {
        let epoch = self.epoch();
        match self.store.find_active_token(&verified.caller.token_id).await? {
            Some(row) if *row.secret_hash == *verified.secret_hash => {
                let fresh = Verified::from_row(row, epoch);
                if self.epoch() == epoch {
                    self.verified.insert(key, fresh.clone());
                }
                Ok(fresh.caller)
            }
            _ => {
                self.verified.invalidate(&key);
                self.rejected.insert(key, ());
                Err(ApiError::unauthorized())
            }
        }
    }

    /// Remembers a token that failed and counts the failure.
    async fn reject(&self, key: [u8; 32], address: IpAddr, real_token_id: Option<&str>) {
        self.rejected.insert(key, ());
        self.failures.record(address, real_token_id).await;
    }
}

impl Verified {
    fn from_row(row: ApiToken, epoch: u64) -> Self {
        Self {
            secret_hash: row.secret_hash.into(),
            caller: Caller {
                team_id: row.team_id,
                token_id: row.token_id,
                scopes: row.scopes,
                expires_at: row.expires_at,
            },
            epoch,
            read_at: Instant::now(),
        }
    }
}

/// Follows revocations through the store's notification session: every announcement, every
/// (re)connection and every gap (a lost session, events missed by falling behind) bumps the
/// epoch; cached verifications are trusted only while the session is connected.
async fn follow_revocations(auth: std::sync::Weak<Authenticator>, mut events: broadcast::Receiver<Event>) {
    loop {
        let event = events.recv().await;
        let Some(a) = auth.upgrade() else { return };
        match event {
            Ok(Event::Notified { channel, .. }) if channel != TOKENS_CHANNEL => continue,
            Ok(Event::Notified { .. }) => {}
            Ok(Event::Connected) => a.listening.store(true, Ordering::SeqCst),
            Ok(Event::Lost) => {
                a.listening.store(false, Ordering::SeqCst);
                tracing::warn!(
                    "lost the token revocation listener; cached tokens are checked against the store until it is back"
                );
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                a.listening.store(false, Ordering::SeqCst);
                a.bump_epoch();
                return;
            }
        }
        a.bump_epoch();
    }
}

/// The caller of an authenticated route, as the authentication middleware found it.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(ApiError::unauthorized)
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
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let caller = state.auth.authenticate(&token, address).await?;
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
    let needed = required_scopes(request.method(), path, request.uri().query());
    if !needed.iter().all(|scope| caller.can(*scope)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "You do not have permission to perform this action.",
        ));
    }
    Ok(next.run(request).await)
}

/// The scopes an operation needs: reading needs `database:read`, creating `database:create`,
/// changing settings, resetting passwords and renewing leases `database:update`, deleting `database:delete`;
/// deleting a user with an heir (`reassign_to`, which hands the heir what the user owns)
/// needs `database:update` as well. The query is read as the handler's extractor reads it.
pub(crate) fn required_scopes(method: &Method, path: &str, query: Option<&str>) -> Vec<Scope> {
    let base = match *method {
        Method::GET | Method::HEAD => Scope::Read,
        Method::POST if path.ends_with("/reset_auth") || path.ends_with("/renew") => Scope::Update,
        Method::POST => Scope::Create,
        Method::PUT | Method::PATCH => Scope::Update,
        Method::DELETE => Scope::Delete,
        _ => Scope::Update,
    };
    let names_heir = *method == Method::DELETE
        && path.ends_with("/users/{username}")
        && query.is_some_and(|q| query_pairs(q).any(|(k, v)| k == "reassign_to" && !v.is_empty()));
    if names_heir {
        vec![base, Scope::Update]
    } else {
        vec![base]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_maps_to_its_scope() {
        let users = "/v2/databases/{database_cluster_uuid}/users";
        let scope = |method: &Method, path: &str| required_scopes(method, path, None);
        assert_eq!(scope(&Method::GET, users), [Scope::Read]);
        assert_eq!(scope(&Method::POST, users), [Scope::Create]);
        assert_eq!(scope(&Method::POST, &format!("{users}/{{username}}/reset_auth")), [Scope::Update]);
        assert_eq!(scope(&Method::POST, &format!("{users}/{{username}}/renew")), [Scope::Update]);
        assert_eq!(scope(&Method::PUT, users), [Scope::Update]);
        assert_eq!(scope(&Method::DELETE, users), [Scope::Delete]);
    }

    #[test]
    fn naming_an_heir_needs_the_update_scope_too() {
        let user = "/v2/databases/{database_cluster_uuid}/users/{username}";
        let delete = |query| required_scopes(&Method::DELETE, user, Some(query));
        assert_eq!(delete("reassign_to=heir"), [Scope::Delete, Scope::Update]);
        assert_eq!(delete("reassign%5Fto=heir&if_owns=reassign"), [Scope::Delete, Scope::Update]);
        assert_eq!(delete("reassign_to=&if_owns=refuse"), [Scope::Delete]);
        let db = "/v2/databases/{database_cluster_uuid}/dbs/{database_name}";
        assert_eq!(required_scopes(&Method::DELETE, db, Some("reassign_to=x")), [Scope::Delete]);
    }
}
