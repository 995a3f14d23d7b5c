//! The sessions passes run on: one small deadpool-postgres pool per cluster, to its admin
//! database, rebuilt when the registration changes and closed when the cluster is gone, all
//! within the process's budget of sessions per target server ([`pgplane_target_server::budget`])
//! however many clusters it hosts; and the plan preview's one-off session, counted there too.
//! Idle sessions close after a short while (or give way at once to a session that needs their
//! server's permit), and pools without sessions are forgotten, so that neither sessions nor the
//! map grow with the clusters registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use pgplane_target_server::budget::{GiveWay, Opening, ServerKey};
use pgplane_target_server::{
    SessionBudget, SessionLimits, TargetError, TargetSpec, CONNECT_TIMEOUT, ONE_OFF_WAIT, SESSION_WAIT,
};
use uuid::Uuid;

/// How long a pooled session may stay unused before it is closed: an idle fleet holds few
/// sessions on its servers.
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One small pool per cluster, to its admin database, rebuilt when the registration changes;
/// every pooled session holds one of its server's permits of the process's budget
/// ([`pgplane_target_server::budget`]) for as long as it is open, however many clusters the server
/// hosts. Pools without sessions are forgotten (see [`Pools::close_idle`]).
pub(crate) struct Pools(Arc<PoolsInner>);

struct PoolsInner {
    budget: SessionBudget,
    pools: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    spec: TargetSpec,
    server: ServerKey,
    pool: Pool,
}

/// A cluster's pool of sessions on its target.
pub(crate) type Pool = deadpool::managed::Pool<Budgeted>;
/// A session taken from a [`Pool`].
pub(crate) type Object = deadpool::managed::Object<Budgeted>;

/// A pooled session (its permit is held by its connection, until the server has closed it).
pub(crate) struct Session {
    client: ClientWrapper,
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
        Ok(Session { client: admin_session(&self.spec, self.limits, SESSION_WAIT).await? })
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
        let inner = Arc::new(PoolsInner { budget: budget.clone(), pools: Mutex::default() });
        let hook: Arc<dyn GiveWay> = inner.clone();
        budget.on_shortage(Arc::downgrade(&hook));
        Self(inner)
    }

    /// The pool for a cluster, created on first use.
    pub(crate) fn get(
        &self,
        cluster_id: Uuid,
        spec: &TargetSpec,
        limits: SessionLimits,
    ) -> Result<Pool, TargetError> {
        let mut pools = self.0.pools.lock().expect("pools lock");
        if let Some(entry) = pools.get(&cluster_id) {
            if entry.spec == *spec {
                return Ok(entry.pool.clone());
            }
        }
        spec.budget()?; // only a checked spec, counted against the budget, makes a pool
        let server = spec.server();
        let manager = Budgeted { spec: spec.clone(), limits };
        // The create timeout is the manager's own: waiting for a permit is not connecting.
        let pool = Pool::builder(manager)
            .max_size(self.0.budget.per_server().min(2))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(SESSION_WAIT))
            .build()
            .expect("pool configuration is valid");
        let entry = Entry { spec: spec.clone(), server, pool: pool.clone() };
        if let Some(old) = pools.insert(cluster_id, entry) {
            old.pool.close();
        }
        Ok(pool)
    }

    /// A second session from `pool` if one is there at once (idle, or a permit of its server
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

    /// Closes pools of clusters that are no longer registered.
    pub(crate) fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.0.pools.lock().expect("pools lock").retain(|id, entry| {
            let kept = keep(id);
            if !kept {
                entry.pool.close();
            }
            kept
        });
    }

    /// Closes sessions unused for [`IDLE_SESSION_TIMEOUT`] and forgets the pools left without
    /// any (a pool costs nothing to rebuild), so that neither the sessions nor the map grow
    /// with the clusters registered.
    pub(crate) fn close_idle(&self) {
        self.0.pools.lock().expect("pools lock").retain(|_, entry| {
            entry.pool.retain(|_, metrics| metrics.last_used() < IDLE_SESSION_TIMEOUT);
            entry.pool.status().size > 0
        });
    }
}

impl GiveWay for PoolsInner {
    /// Closes one idle session on `server` (if there is one), for a session that needs a
    /// permit there.
    fn give_way(&self, server: ServerKey) {
        let mut wanted = true;
        for entry in self.pools.lock().expect("pools lock").values().filter(|e| e.server == server) {
            entry.pool.retain(|_, _| !std::mem::take(&mut wanted));
            if !wanted {
                break;
            }
        }
    }
}
