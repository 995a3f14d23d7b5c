//! Users' credentials as the API shows them: opened from their sealed form once, then kept in
//! a bounded in-process cache, so that listing a cluster's users does not unseal (decrypt and
//! parse) every password on every request. The cache only holds what the process already
//! holds the key to. It keeps one entry per cluster (one lookup per request, however many
//! users it shows), holding its users' opened credentials by name; a user's entry is used
//! only while its row holds the very sealed value it was opened from, so a new password is
//! opened anew and a sealed value copied to another row is opened (and refused) under that
//! row. What a request opens is added to its cluster's entry in place (no copy of the
//! cluster's other users), which is then weighed anew. Entries of users since deleted stay
//! until their cluster's entry idles or is evicted; what they open logs in as nothing.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use moka::sync::Cache;
use pgplane_core::model::User;
use pgplane_core::passwords::Credentials;
use pgplane_core::secrets::Sealer;
use uuid::Uuid;

use crate::error::ApiError;

/// Most users whose opened credentials are kept, over every cluster (a few hundred bytes each).
const CAPACITY: u64 = 20_000;
/// How long a cluster's entry that no request has used stays.
const IDLE: Duration = Duration::from_secs(600);

struct Opened {
    sealed: Vec<u8>,
    password: String,
}

/// One cluster's opened credentials, by user name.
type Known = RwLock<HashMap<String, Opened>>;

/// Opens users' sealed credentials, remembering what it opened.
#[derive(Clone)]
pub(crate) struct CredentialsCache {
    sealer: Sealer,
    opened: Cache<Uuid, Arc<Known>>,
}

impl CredentialsCache {
    pub fn new(sealer: Sealer) -> Self {
        let opened = Cache::builder()
            .max_capacity(CAPACITY)
            .weigher(|_, known: &Arc<Known>| {
                let users = known.read().unwrap_or_else(PoisonError::into_inner).len();
                u32::try_from(users).unwrap_or(u32::MAX).max(1)
            })
            .time_to_idle(IDLE)
            .build();
        Self { sealer, opened }
    }

    /// The passwords of one cluster's users, for one request.
    pub fn of_cluster(&self, cluster_id: Uuid) -> ClusterPasswords<'_> {
        ClusterPasswords { cache: self, cluster_id, known: self.opened.get(&cluster_id), fresh: Vec::new() }
    }

    /// One user's password.
    pub fn password(&self, user: &User) -> Result<String, ApiError> {
        self.of_cluster(user.cluster_id).password(user)
    }
}

/// One cluster's passwords as one request sees them: found in the cache entry read when the
/// request began, else opened; what was opened joins that entry when this is dropped.
pub(crate) struct ClusterPasswords<'a> {
    cache: &'a CredentialsCache,
    cluster_id: Uuid,
    known: Option<Arc<Known>>,
    fresh: Vec<(String, Opened)>,
}

impl ClusterPasswords<'_> {
    /// The user's password (a user of another cluster is opened and not kept).
    pub fn password(&mut self, user: &User) -> Result<String, ApiError> {
        let ours = user.cluster_id == self.cluster_id;
        if let Some(known) = self.known.as_ref().filter(|_| ours) {
            let known = known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(opened) = known.get(&user.name).filter(|o| o.sealed == user.credentials_sealed) {
                return Ok(opened.password.clone());
            }
        }
        let plain = self
            .cache
            .sealer
            .open(&user.credentials_sealed, &User::credentials_context(user.cluster_id, &user.name))
            .map_err(ApiError::from)?;
        let credentials: Credentials = serde_json::from_slice(&plain).map_err(|_| ApiError::internal())?;
        if ours {
            let opened =
                Opened { sealed: user.credentials_sealed.clone(), password: credentials.password.clone() };
            self.fresh.push((user.name.clone(), opened));
        }
        Ok(credentials.password)
    }
}

impl Drop for ClusterPasswords<'_> {
    fn drop(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let known = self.known.take().unwrap_or_default();
        known.write().unwrap_or_else(PoisonError::into_inner).extend(self.fresh.drain(..));
        // Inserted again, grown: the cache weighs it anew.
        self.cache.opened.insert(self.cluster_id, known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use pgplane_core::lifecycle::{DesiredState, SyncStatus, UserRole};

    fn user(cluster_id: Uuid, name: &str, sealed: Vec<u8>) -> User {
        User {
            cluster_id,
            name: name.into(),
            role: UserRole::Normal,
            credentials_sealed: sealed,
            allow_replication: false,
            connection_limit: -1,
            parameters: Default::default(),
            state: DesiredState::Present,
            generation: 1,
            applied_generation: 1,
            sync_status: SyncStatus::Ready,
            last_error: None,
            claimed: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            reassign_to: None,
            valid_until: None,
            expiry_enforced_at: None,
            lease_seconds: None,
            alternate_login: None,
            alternate_claimed: false,
            alternate_active: false,
            other_credentials_sealed: None,
            grace_until: None,
        }
    }

    #[test]
    fn opens_once_per_sealed_value_and_refuses_one_moved_to_another_row() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let cache = CredentialsCache::new(sealer.clone());
        let cluster = Uuid::new_v4();
        let seal = |name: &str, password: &str| {
            let body = format!(r#"{{"password":"{password}","verifier":"SCRAM-SHA-256$4096:x"}}"#);
            sealer.seal(body.as_bytes(), &User::credentials_context(cluster, name))
        };
        let alice = user(cluster, "alice", seal("alice", "pw-one"));
        let bob = user(cluster, "bob", seal("bob", "pw-bob"));
        {
            let mut passwords = cache.of_cluster(cluster);
            assert_eq!(passwords.password(&alice).unwrap(), "pw-one");
            assert_eq!(passwords.password(&bob).unwrap(), "pw-bob");
        }
        // A cache that cannot open anything still answers for what it kept.
        let blind = CredentialsCache {
            sealer: Sealer::from_base64(&Sealer::generate_key()).unwrap(),
            opened: cache.opened.clone(),
        };
        let mut passwords = blind.of_cluster(cluster);
        assert_eq!(passwords.password(&alice).unwrap(), "pw-one", "from the cache");
        assert_eq!(passwords.password(&bob).unwrap(), "pw-bob", "from the cache");
        let mallory = user(cluster, "mallory", alice.credentials_sealed.clone());
        assert!(passwords.password(&mallory).is_err(), "alice's sealed value is not mallory's");
        let elsewhere = user(Uuid::new_v4(), "alice", alice.credentials_sealed.clone());
        assert!(passwords.password(&elsewhere).is_err(), "nor alice's of another cluster");
        drop(passwords);
        let reset = user(cluster, "alice", seal("alice", "pw-two"));
        assert!(blind.password(&reset).is_err(), "the entry of the old sealed value is not used");
        assert_eq!(cache.password(&reset).unwrap(), "pw-two", "a new sealed value is opened anew");
        assert_eq!(blind.password(&reset).unwrap(), "pw-two", "and kept");
        assert_eq!(blind.password(&bob).unwrap(), "pw-bob", "beside the cluster's other users");
    }
}
