//! Users' credentials opened from their sealed form once, then kept in a bounded in-process
//! cache: listing a cluster's users shows every password, and every full pass compares every
//! login's SCRAM verifier with the target's, so without it each request or pass would unseal
//! (decrypt and parse) them all (300 users: about 0.9 ms of a pass's CPU). The cache only
//! holds what the process already holds the key to. It keeps one entry per cluster (one lookup
//! per request or pass, however many users it reads), holding its users' opened credentials by
//! login (a user's own, and the other login of a rotation); an entry is used only while the
//! user's row holds the very sealed value it was opened from, so a new password is opened anew
//! and a sealed value copied to another row is opened (and refused) under that row. What is
//! opened is added to its cluster's entry in place (no copy of the cluster's other users),
//! which is then weighed anew. Entries of users since deleted stay until their cluster's entry
//! idles or is evicted; what they open logs in as nothing. Nothing here is logged.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use crate::error::Result;
use crate::model::User;
use crate::passwords::Credentials;
use crate::secrets::Sealer;

/// Most users whose opened credentials are kept, over every cluster (a few hundred bytes each,
/// twice that during a rotation).
const CAPACITY: u64 = 20_000;
/// How long a cluster's entry that nothing has used stays.
const IDLE: Duration = Duration::from_secs(600);

/// Which of a user's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Login {
    /// `credentials_sealed`: the credentials the API shows.
    Current,
    /// `other_credentials_sealed`: a rotation's other login.
    Other,
}

struct Opened {
    sealed: Vec<u8>,
    credentials: Credentials,
}

/// A user's opened credentials: its own, and its other login's.
#[derive(Default)]
struct Logins {
    current: Option<Opened>,
    other: Option<Opened>,
}

impl Logins {
    fn get(&self, login: Login) -> Option<&Opened> {
        match login {
            Login::Current => self.current.as_ref(),
            Login::Other => self.other.as_ref(),
        }
    }

    fn set(&mut self, login: Login, opened: Opened) {
        match login {
            Login::Current => self.current = Some(opened),
            Login::Other => self.other = Some(opened),
        }
    }
}

/// One cluster's opened credentials, by user name.
type Known = RwLock<HashMap<String, Logins>>;

/// Opens users' sealed credentials, remembering what it opened.
#[derive(Clone)]
pub struct CredentialsCache {
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

    /// The sealer it opens with.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The credentials of one cluster's users, for one request or pass.
    pub fn of_cluster(&self, cluster_id: Uuid) -> ClusterCredentials<'_> {
        ClusterCredentials { cache: self, cluster_id, known: self.opened.get(&cluster_id), fresh: Vec::new() }
    }

    /// One user's password.
    pub fn password(&self, user: &User) -> Result<String> {
        self.of_cluster(user.cluster_id).password(user)
    }
}

/// One cluster's credentials as one request or pass sees them: found in the cache entry read
/// when it began, else opened; what was opened joins that entry when this is dropped.
pub struct ClusterCredentials<'a> {
    cache: &'a CredentialsCache,
    cluster_id: Uuid,
    known: Option<Arc<Known>>,
    fresh: Vec<(String, Login, Opened)>,
}

impl ClusterCredentials<'_> {
    /// The user's password (a user of another cluster is opened and not kept).
    pub fn password(&mut self, user: &User) -> Result<String> {
        self.read(user, Login::Current, |c| c.password.clone())
    }

    /// The SCRAM verifier of one of the user's logins. The other login's is an error when the
    /// user has none.
    pub fn verifier(&mut self, user: &User, login: Login) -> Result<String> {
        self.read(user, login, |c| c.verifier.clone())
    }

    fn read<T>(&mut self, user: &User, login: Login, field: impl Fn(&Credentials) -> T) -> Result<T> {
        let (sealed, context) = match login {
            Login::Current => {
                (&user.credentials_sealed, User::credentials_context(user.cluster_id, &user.name))
            }
            Login::Other => (
                user.other_credentials_sealed.as_ref().ok_or(crate::error::Error::Unseal)?,
                User::other_credentials_context(user.cluster_id, &user.name),
            ),
        };
        let ours = user.cluster_id == self.cluster_id;
        if let Some(known) = self.known.as_ref().filter(|_| ours) {
            let known = known.read().unwrap_or_else(PoisonError::into_inner);
            let opened = known.get(&user.name).and_then(|logins| logins.get(login));
            if let Some(opened) = opened.filter(|o| &o.sealed == sealed) {
                return Ok(field(&opened.credentials));
            }
        }
        let credentials = Credentials::open(&self.cache.sealer, sealed, &context)?;
        let value = field(&credentials);
        if ours {
            let opened = Opened { sealed: sealed.clone(), credentials };
            self.fresh.push((user.name.clone(), login, opened));
        }
        Ok(value)
    }
}

impl Drop for ClusterCredentials<'_> {
    fn drop(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let known = self.known.take().unwrap_or_default();
        {
            let mut users = known.write().unwrap_or_else(PoisonError::into_inner);
            for (name, login, opened) in self.fresh.drain(..) {
                users.entry(name).or_default().set(login, opened);
            }
        }
        // Inserted again, grown: the cache weighs it anew.
        self.cache.opened.insert(self.cluster_id, known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{DesiredState, SyncStatus, UserRole};
    use chrono::Utc;

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
            access_generation: 0,
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

    #[test]
    fn a_rotations_other_login_is_kept_apart_from_the_users_own() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let cache = CredentialsCache::new(sealer.clone());
        let cluster = Uuid::new_v4();
        let body = |verifier: &str| format!(r#"{{"password":"pw","verifier":"{verifier}"}}"#);
        let mut alice = user(
            cluster,
            "alice",
            sealer.seal(body("own").as_bytes(), &User::credentials_context(cluster, "alice")),
        );
        {
            let mut opened = cache.of_cluster(cluster);
            assert_eq!(opened.verifier(&alice, Login::Current).unwrap(), "own");
            assert!(opened.verifier(&alice, Login::Other).is_err(), "no other login");
            // Its own credentials, moved to the other login's column, are refused there.
            alice.other_credentials_sealed = Some(alice.credentials_sealed.clone());
            assert!(opened.verifier(&alice, Login::Other).is_err());
        }
        alice.other_credentials_sealed =
            Some(sealer.seal(body("other").as_bytes(), &User::other_credentials_context(cluster, "alice")));
        let mut opened = cache.of_cluster(cluster);
        assert_eq!(opened.verifier(&alice, Login::Other).unwrap(), "other");
        assert_eq!(opened.verifier(&alice, Login::Current).unwrap(), "own", "kept from the first pass");
    }
}
