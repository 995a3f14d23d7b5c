//! The sessions passes run on: one small deadpool-postgres pool per admin connection (the
//! same server, database, login and secret), shared by every cluster registered with it, all
//! within the process's budget of sessions per target server ([`pgplane_target_server::budget`])
//! however many clusters it hosts; and the plan preview's one-off session, counted there too.
//! A drift round over a server's clusters thus reuses a few sessions instead of logging in once
//! per cluster. Sessions are only shared between clusters whose admin connections are equal in
//! every field, secret included: whoever could open one of them could open the others. Idle
//! sessions close after a short while (or give way at once to a session that needs their
//! server's permit), and pools without sessions are forgotten, so that neither sessions nor the
//! maps grow with the clusters registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use pgplane_target_server::budget::{GiveWay, Opening, ServerKey};
use pgplane_target_server::{
    SessionBudget, SessionLimits, TargetError, TargetSpec, CONNECT_TIMEOUT, ONE_OFF_WAIT, SESSION_WAIT,
};
use uuid::Uuid;

use crate::observe::Known;

/// How long a pooled session may stay unused before it is closed: an idle fleet holds few
/// sessions on its servers.
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One small pool per admin connection, to its admin database; every pooled session holds one
/// of its server's permits of the process's budget ([`pgplane_target_server::budget`]) for as
/// long as it is open, however many clusters the server hosts. Pools without sessions are
/// forgotten (see [`Pools::close_idle`]).
pub(crate) struct Pools(Arc<PoolsInner>);

struct PoolsInner {
    budget: SessionBudget,
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    /// The pools, one per admin connection (few: each holds at least one session, or was
    /// made for a pass that is about to open one).
    pools: Vec<Pool>,
    /// The pool each cluster last used, for the clusters whose pool is still there.
    clusters: HashMap<Uuid, Pool>,
}

impl Maps {
    /// Forgets the pools `keep` does not keep (closing them) and the clusters that used them.
    fn retain_pools(&mut self, mut keep: impl FnMut(&Pool) -> bool) {
        self.pools.retain(|pool| {
            let kept = keep(pool);
            if !kept {
                pool.close();
            }
            kept
        });
        self.clusters.retain(|_, pool| !pool.is_closed());
    }
}

/// The pool of sessions on a target that the clusters of one admin connection share.
pub(crate) type Pool = deadpool::managed::Pool<Budgeted>;
/// A session taken from a [`Pool`].
pub(crate) type Object = deadpool::managed::Object<Budgeted>;

/// A pooled session (its permit is held by its connection, until the server has closed it),
/// with what its last observation found out about the server.
pub(crate) struct Session {
    client: ClientWrapper,
    known: Mutex<Option<Known>>,
}

impl Session {
    /// What the session's last observation found (see [`Known`]).
    pub(crate) fn known(&self) -> Option<Known> {
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers what an observation found, for the next one.
    pub(crate) fn remember(&self, known: Known) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = Some(known);
    }
}

impl std::ops::Deref for Session {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

/// A session to `spec`'s admin database for a caller holding none on its server, as
/// deadpool-postgres's client (for its statement cache).
///
/// deadpool-postgres aborts the task it is given with a client when the client is dropped:
/// aborting a session's connection drops its socket without a Terminate message and, before
/// the session's permit was held by the connection itself, gave the permit back at once, while
/// the server's backend was still running until it noticed. A new session could then be
/// counted on the server before the old one was gone (the bench saw 11 and 12 sessions against
/// a cap of 10). So it is given a finished task instead: dropping the client ends the connection
/// gracefully, and the permit comes back once the server has closed the session.
async fn admin_session(
    spec: &TargetSpec,
    limits: SessionLimits,
    wait: Duration,
) -> Result<ClientWrapper, TargetError> {
    let client = spec.connect_first(spec.admin_database(), limits, wait).await?;
    Ok(ClientWrapper::new(client, tokio::spawn(async {})))
}

/// A one-off session to `spec`'s admin database, outside any pool (the plan preview), closed
/// when dropped; it waits up to [`ONE_OFF_WAIT`] for one of its server's permits.
pub(crate) async fn one_off(spec: &TargetSpec, limits: SessionLimits) -> Result<ClientWrapper, TargetError> {
    admin_session(spec, limits, ONE_OFF_WAIT).await
}

/// Opens pooled sessions with a permit of their server, waiting up to [`SESSION_WAIT`] for one.
pub(crate) struct Budgeted {
    spec: TargetSpec,
    limits: SessionLimits,
}

impl deadpool::managed::Manager for Budgeted {
    type Type = Session;
    type Error = TargetError;

    async fn create(&self) -> Result<Session, TargetError> {
        Ok(Session {
            client: admin_session(&self.spec, self.limits, SESSION_WAIT).await?,
            known: Mutex::default(),
        })
    }

    async fn recycle(
        &self,
        session: &mut Session,
        _: &deadpool_postgres::Metrics,
    ) -> deadpool::managed::RecycleResult<TargetError> {
        if session.client.is_closed() {
            return Err(deadpool::managed::RecycleError::message("the session was closed"));
        }
        Ok(())
    }
}

impl Pools {
    /// Pools whose sessions count against `budget`; their idle sessions give way when a
    /// server's permits are all taken.
    pub(crate) fn new(budget: &SessionBudget) -> Self {
        let inner = Arc::new(PoolsInner { budget: budget.clone(), maps: Mutex::default() });
        let hook: Arc<dyn GiveWay> = inner.clone();
        budget.on_shortage(Arc::downgrade(&hook));
        Self(inner)
    }

    /// The pool of `spec`'s admin connection, created on first use, which `cluster_id` uses.
    pub(crate) fn get(
        &self,
        cluster_id: Uuid,
        spec: &TargetSpec,
        limits: SessionLimits,
    ) -> Result<Pool, TargetError> {
        let mut maps = self.0.maps.lock().expect("pools lock");
        let pool = match maps.pools.iter().find(|pool| pool.manager().spec == *spec) {
            Some(pool) => pool.clone(),
            None => {
                spec.budget()?; // only a checked spec, counted against the budget, makes a pool
                let manager = Budgeted { spec: spec.clone(), limits };
                // The create timeout is the manager's own: waiting for a permit is not connecting.
                let pool = Pool::builder(manager)
                    .max_size(self.0.budget.per_server())
                    .runtime(deadpool::Runtime::Tokio1)
                    .wait_timeout(Some(SESSION_WAIT))
                    .build()
                    .expect("pool configuration is valid");
                maps.pools.push(pool.clone());
                pool
            }
        };
        maps.clusters.insert(cluster_id, pool.clone());
        Ok(pool)
    }

    /// One more session from `pool` if one is there at once (idle, or a permit of its server
    /// free to open one), for sharing a pass's work.
    pub(crate) async fn spare(pool: &Pool) -> Option<Object> {
        let spec = &pool.manager().spec;
        if pool.status().available == 0 && !spec.budget().ok()?.available(spec.server(), Opening::First) {
            return None;
        }
        let at_once = deadpool::managed::Timeouts {
            wait: Some(Duration::ZERO),
            create: Some(CONNECT_TIMEOUT),
            recycle: None,
        };
        pool.timeout_get(&at_once).await.ok()
    }

    /// Forgets which pool a cluster that is no longer registered used (the pool stays for the
    /// other clusters of its admin connection, until it is idle).
    pub(crate) fn forget(&self, cluster_id: Uuid) {
        self.0.maps.lock().expect("pools lock").clusters.remove(&cluster_id);
    }

    /// Closes the pool `cluster_id` used, whose sessions may be stuck on a target that stopped
    /// answering; the next pass of any cluster of its admin connection opens fresh ones.
    pub(crate) fn discard(&self, cluster_id: Uuid) {
        let mut maps = self.0.maps.lock().expect("pools lock");
        if let Some(stuck) = maps.clusters.remove(&cluster_id) {
            stuck.close();
            maps.retain_pools(|pool| !pool.is_closed());
        }
    }

    /// Closes sessions unused for [`IDLE_SESSION_TIMEOUT`] and forgets the pools left without
    /// any (a pool costs nothing to rebuild), so that neither the sessions nor the maps grow
    /// with the clusters registered.
    pub(crate) fn close_idle(&self) {
        self.0.maps.lock().expect("pools lock").retain_pools(|pool| {
            pool.retain(|_, metrics| metrics.last_used() < IDLE_SESSION_TIMEOUT);
            pool.status().size > 0
        });
    }
}

impl GiveWay for PoolsInner {
    /// Closes one idle session on `server` (if there is one), for a session that needs a
    /// permit there.
    fn give_way(&self, server: ServerKey) {
        let mut wanted = true;
        let maps = self.maps.lock().expect("pools lock");
        for pool in maps.pools.iter().filter(|pool| pool.manager().spec.server() == server) {
            pool.retain(|_, _| !std::mem::take(&mut wanted));
            if !wanted {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pgplane_core::store::AdminConnection;
    use pgplane_target_server::TargetPolicy;

    use super::*;

    async fn spec(policy: &TargetPolicy, user: &str, password: &str) -> TargetSpec {
        TargetSpec::new(AdminConnection {
            host: "127.0.0.1".into(),
            port: 5432,
            user: user.into(),
            password: password.into(),
            database: "postgres".into(),
            sslmode: "disable".into(),
            ca_certificate: None,
        })
        .checked(policy)
        .await
        .unwrap()
    }

    /// Clusters registered with the same admin connection share one pool; a connection that
    /// differs in anything, the secret included, never gets their sessions.
    #[tokio::test]
    async fn only_clusters_of_one_admin_connection_share_a_pool() {
        let policy = TargetPolicy::default();
        let pools = Pools::new(policy.budget());
        let limits = SessionLimits::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let admin = spec(&policy, "admin", "secret").await;
        let first = pools.get(a, &admin, limits).unwrap();
        let shared = pools.get(b, &spec(&policy, "admin", "secret").await, limits).unwrap();
        assert!(first.manager().spec == shared.manager().spec);
        assert_eq!(pools.0.maps.lock().unwrap().pools.len(), 1);
        for other in [spec(&policy, "admin", "guessed").await, spec(&policy, "other", "secret").await] {
            let own = pools.get(c, &other, limits).unwrap();
            assert!(own.manager().spec == other && own.manager().spec != admin);
        }
        assert_eq!(pools.0.maps.lock().unwrap().pools.len(), 3);

        // A cluster gone leaves the pool to the others; a stuck pool is closed for all of them.
        pools.forget(a);
        assert!(!first.is_closed());
        pools.discard(b);
        assert!(first.is_closed());
        let fresh = pools.get(a, &admin, limits).unwrap();
        assert!(!fresh.is_closed());
        assert_eq!(pools.0.maps.lock().unwrap().pools.len(), 3);
        // Pools without sessions are forgotten, and with them the clusters that used them.
        pools.close_idle();
        let maps = pools.0.maps.lock().unwrap();
        assert!(maps.pools.is_empty() && maps.clusters.is_empty());
    }
}
