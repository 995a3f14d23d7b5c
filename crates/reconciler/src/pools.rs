//! The sessions passes run on: one small deadpool-postgres pool per cluster, to its admin
//! database, rebuilt when the registration changes and closed when the cluster is gone, all
//! within a bounded number of sessions per target server however many clusters it hosts.
//! Idle sessions close after a short while, and pools and servers without sessions are
//! forgotten, so that neither sessions nor maps grow with the clusters registered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use pgplane_target::{within, SessionLimits, TargetError, TargetSpec, CONNECT_TIMEOUT};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// How long a pooled session may stay unused before it is closed: an idle fleet holds few
/// sessions on its servers.
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a pass may wait for one of the sessions its server allows.
const SESSION_WAIT: Duration = Duration::from_secs(30);

/// One small pool per cluster, to its admin database, rebuilt when the registration changes;
/// every pooled session holds one of its server's `per_server` permits for as long as it is
/// open, however many clusters the server hosts. A server identifies as its lowest resolved
/// address and its port. Pools without sessions are forgotten (see [`Pools::close_idle`]).
pub(crate) struct Pools(Arc<PoolsInner>);

struct PoolsInner {
    per_server: usize,
    pools: Mutex<HashMap<Uuid, Entry>>,
    budgets: Mutex<HashMap<ServerKey, Arc<Semaphore>>>,
}

type ServerKey = (Option<IpAddr>, u16);

struct Entry {
    spec: TargetSpec,
    server: ServerKey,
    pool: Pool,
}

/// A cluster's pool of sessions on its target.
pub(crate) type Pool = deadpool::managed::Pool<Budgeted>;
/// A session taken from a [`Pool`].
pub(crate) type Object = deadpool::managed::Object<Budgeted>;

/// A pooled session and the server permit it holds until it closes.
pub(crate) struct Session {
    client: deadpool_postgres::ClientWrapper,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Session {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &deadpool_postgres::ClientWrapper {
        &self.client
    }
}

/// deadpool-postgres's manager, opening a session only with a permit of its server.
pub(crate) struct Budgeted {
    inner: Manager,
    server: ServerKey,
    permits: Arc<Semaphore>,
    per_server: usize,
    pools: std::sync::Weak<PoolsInner>,
}

impl deadpool::managed::Manager for Budgeted {
    type Type = Session;
    type Error = TargetError;

    async fn create(&self) -> Result<Session, TargetError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // An idle session of the server's other clusters gives way first.
                if let Some(pools) = self.pools.upgrade() {
                    pools.close_one_idle_on(self.server);
                }
                let wait = tokio::time::timeout(SESSION_WAIT, self.permits.clone().acquire_owned());
                match wait.await {
                    Ok(permit) => permit.expect("the server's permits are never closed"),
                    Err(_) => {
                        return Err(TargetError::Connect(format!(
                            "all {} sessions pgplane may hold on this server were busy for {} s",
                            self.per_server,
                            SESSION_WAIT.as_secs()
                        )))
                    }
                }
            }
        };
        let client = within(CONNECT_TIMEOUT, async { Ok(self.inner.create().await?) }).await?;
        Ok(Session { client, _permit: permit })
    }

    async fn recycle(
        &self,
        session: &mut Session,
        metrics: &deadpool_postgres::Metrics,
    ) -> deadpool::managed::RecycleResult<TargetError> {
        self.inner.recycle(&mut session.client, metrics).await.map_err(|e| match e {
            deadpool::managed::RecycleError::Message(m) => deadpool::managed::RecycleError::Message(m),
            deadpool::managed::RecycleError::Backend(e) => deadpool::managed::RecycleError::Backend(e.into()),
        })
    }
}

impl Pools {
    /// Pools holding at most `per_server` sessions on any one server (at least one).
    pub(crate) fn new(per_server: usize) -> Self {
        Self(Arc::new(PoolsInner {
            per_server: per_server.max(1),
            pools: Mutex::default(),
            budgets: Mutex::default(),
        }))
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
        let server = (spec.addrs.iter().min().copied(), spec.admin.port);
        let permits = self
            .0
            .budgets
            .lock()
            .expect("budgets lock")
            .entry(server)
            .or_insert_with(|| Arc::new(Semaphore::new(self.0.per_server)))
            .clone();
        let manager = Budgeted {
            inner: Manager::from_config(
                spec.config(spec.admin_database(), limits)?,
                spec.tls()?,
                ManagerConfig { recycling_method: RecyclingMethod::Fast },
            ),
            server,
            permits,
            per_server: self.0.per_server,
            pools: Arc::downgrade(&self.0),
        };
        // The create timeout is the manager's own: waiting for a permit is not connecting.
        let pool = Pool::builder(manager)
            .max_size(self.0.per_server.min(2))
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
        if pool.status().available == 0 && pool.manager().permits.available_permits() == 0 {
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

    /// Closes sessions unused for [`IDLE_SESSION_TIMEOUT`] and forgets the pools and servers
    /// left without any (a pool costs nothing to rebuild), so that neither the sessions nor
    /// the maps grow with the clusters registered.
    pub(crate) fn close_idle(&self) {
        self.0.pools.lock().expect("pools lock").retain(|_, entry| {
            entry.pool.retain(|_, metrics| metrics.last_used() < IDLE_SESSION_TIMEOUT);
            entry.pool.status().size > 0
        });
        self.0.budgets.lock().expect("budgets lock").retain(|_, permits| Arc::strong_count(permits) > 1);
    }
}

impl PoolsInner {
    /// Closes one idle session on `server` (if there is one), for a pass that needs a permit
    /// there.
    fn close_one_idle_on(&self, server: ServerKey) {
        let mut wanted = true;
        for entry in self.pools.lock().expect("pools lock").values().filter(|e| e.server == server) {
            entry.pool.retain(|_, _| !std::mem::take(&mut wanted));
            if !wanted {
                break;
            }
        }
    }
}

/// A pool of its own, of one session outside the servers' budgets, for a one-off read of the
/// target (the plan preview), as registration probes are; it closes when dropped.
pub(crate) fn one_off_pool(
    spec: &TargetSpec,
    limits: SessionLimits,
) -> Result<deadpool_postgres::Pool, TargetError> {
    let manager = Manager::from_config(
        spec.config(spec.admin_database(), limits)?,
        spec.tls()?,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .expect("pool configuration is valid"))
}
