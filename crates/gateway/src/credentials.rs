//! Users' credentials as the API shows them: opened from their sealed form once, then kept in
//! a bounded in-process cache, so that listing a cluster's users does not unseal (decrypt and
//! parse) every password on every request. The cache only holds what the process already
//! holds the key to; an entry is found by the sealed value's authentication tag (unique per
//! sealing) and must match the whole sealed value and the row it was opened for, so a sealed
//! value copied to another row is opened (and refused) anew.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use pgplane_core::model::User;
use pgplane_core::passwords::Credentials;
use pgplane_core::secrets::Sealer;
use uuid::Uuid;

use crate::error::ApiError;

/// Most users whose opened credentials are kept (a few hundred bytes each).
const CAPACITY: u64 = 20_000;
/// How long an entry no request has used stays.
const IDLE: Duration = Duration::from_secs(600);

struct Opened {
    cluster_id: Uuid,
    name: String,
    sealed: Vec<u8>,
    password: String,
}

/// The cache key of a sealed value: its last 16 bytes, the AEAD tag.
fn tag(sealed: &[u8]) -> u128 {
    let mut tag = [0u8; 16];
    let n = sealed.len().min(16);
    tag[16 - n..].copy_from_slice(&sealed[sealed.len() - n..]);
    u128::from_le_bytes(tag)
}

/// Opens users' sealed credentials, remembering what it opened.
#[derive(Clone)]
pub(crate) struct CredentialsCache {
    sealer: Sealer,
    opened: Cache<u128, Arc<Opened>>,
}

impl CredentialsCache {
    pub fn new(sealer: Sealer) -> Self {
        Self { sealer, opened: Cache::builder().max_capacity(CAPACITY).time_to_idle(IDLE).build() }
    }

    /// The user's password.
    pub fn password(&self, user: &User) -> Result<String, ApiError> {
        let key = tag(&user.credentials_sealed);
        if let Some(o) = self.opened.get(&key) {
            if o.sealed == user.credentials_sealed && o.cluster_id == user.cluster_id && o.name == user.name {
                return Ok(o.password.clone());
            }
        }
        let plain = self
            .sealer
            .open(&user.credentials_sealed, &User::credentials_context(user.cluster_id, &user.name))
            .map_err(ApiError::from)?;
        let credentials: Credentials = serde_json::from_slice(&plain).map_err(|_| ApiError::internal())?;
        let opened = Opened {
            cluster_id: user.cluster_id,
            name: user.name.clone(),
            sealed: user.credentials_sealed.clone(),
            password: credentials.password,
        };
        let password = opened.password.clone();
        self.opened.insert(key, Arc::new(opened));
        Ok(password)
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
    fn opens_once_and_refuses_a_sealed_value_moved_to_another_row() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let cache = CredentialsCache::new(sealer.clone());
        let cluster = Uuid::new_v4();
        let body = br#"{"password":"pw-one","verifier":"SCRAM-SHA-256$4096:x"}"#;
        let sealed = sealer.seal(body, &User::credentials_context(cluster, "alice"));
        let alice = user(cluster, "alice", sealed.clone());
        assert_eq!(cache.password(&alice).unwrap(), "pw-one");
        assert_eq!(cache.password(&alice).unwrap(), "pw-one", "from the cache");
        let mallory = user(cluster, "mallory", sealed);
        assert!(cache.password(&mallory).is_err(), "bound to alice's row, cached or not");
    }
}
