//! Connections to target servers: the connection parameters of a registered cluster, the probe
//! run at registration, one small deadpool-postgres pool per cluster (to its admin database)
//! within a bounded number of sessions per server, and one-off connections to other databases (closed at once, so that they never keep a
//! database from being dropped).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use pgplane_core::model::Cluster;
use pgplane_core::secrets::Sealer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::error::TargetError;
use crate::policy::TargetPolicy;

/// How long connecting to a target may take, TLS and authentication included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a one-off exchange with a target outside a pass (the registration probe, the
/// listing of unmanaged objects) may take once connected.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` against a target under a deadline pgplane enforces itself (a server that accepts
/// connections and then stalls would otherwise hold the caller for as long as TCP allows).
pub async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, TargetError>>,
) -> Result<T, TargetError> {
    tokio::time::timeout(limit, work).await.unwrap_or(Err(TargetError::Stalled(limit.as_secs().max(1))))
}

pub use crate::tls::SUPPORTED_SSLMODES;

/// Oldest PostgreSQL major version pgplane manages (DROP DATABASE ... WITH (FORCE) is 13+).
pub const MIN_SERVER_VERSION_NUM: i32 = 130000;

/// Where and how to log in to a target as its admin.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    pub sslmode: String,
    /// PEM of the CA for `verify-full`.
    pub ca_certificate: Option<String>,
    /// The addresses `host` resolved to, all allowed by the target policy
    /// ([`TargetSpec::checked`]); no connection is made without them.
    pub addrs: Vec<IpAddr>,
}

impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TargetSpec({}@{}:{}/{})", self.user, self.host, self.port, self.database)
    }
}

/// Limits applied to every session pgplane opens on a target, so that a session holding a
/// catalog lock cannot hang the reconciler.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self { statement_timeout: Duration::from_secs(60), lock_timeout: Duration::from_secs(5) }
    }
}

impl TargetSpec {
    /// The admin connection of a registered cluster, its password unsealed.
    pub fn of(cluster: &Cluster, sealer: &Sealer) -> Result<Self, TargetError> {
        let password = sealer
            .open_str(&cluster.admin_password_sealed, &Cluster::admin_password_context(cluster.cluster_id))?;
        Ok(Self {
            host: cluster.host.clone(),
            port: u16::try_from(cluster.port).unwrap_or(5432),
            user: cluster.admin_user.clone(),
            password,
            database: cluster.admin_database.clone(),
            sslmode: cluster.sslmode.clone(),
            ca_certificate: cluster.ca_certificate.clone(),
            addrs: Vec::new(),
        })
    }

    /// This spec with its host resolved and checked against `policy` (refused before any
    /// connection when outside it).
    pub async fn checked(mut self, policy: &TargetPolicy) -> Result<Self, TargetError> {
        self.addrs = policy.resolve(&self.host, self.port).await?;
        Ok(self)
    }

    /// A tokio-postgres configuration for `database` on this target, at the checked addresses
    /// (tried in order; the host name stays for TLS verification).
    pub fn config(
        &self,
        database: &str,
        limits: SessionLimits,
    ) -> Result<tokio_postgres::Config, TargetError> {
        if self.addrs.is_empty() {
            return Err(TargetError::Internal(
                "the target's address was not checked against the target policy".into(),
            ));
        }
        let mut config = tokio_postgres::Config::new();
        for addr in &self.addrs {
            config.host(&self.host).hostaddr(*addr).port(self.port);
        }
        config
            .user(&self.user)
            .password(&self.password)
            .dbname(database)
            .application_name("pgplane")
            .connect_timeout(CONNECT_TIMEOUT)
            .ssl_mode(crate::tls::ssl_mode(&self.sslmode))
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={}",
                limits.statement_timeout.as_millis(),
                limits.lock_timeout.as_millis()
            ));
        Ok(config)
    }

    /// The TLS connector for this target's sslmode.
    pub fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TargetError> {
        crate::tls::connector(&self.sslmode, self.ca_certificate.as_deref())
    }

    /// Opens one connection to `database` (TLS and authentication included, within
    /// [`CONNECT_TIMEOUT`]); it closes when the returned client is dropped.
    pub async fn connect(
        &self,
        database: &str,
        limits: SessionLimits,
    ) -> Result<tokio_postgres::Client, TargetError> {
        let (config, tls) = (self.config(database, limits)?, self.tls()?);
        let (client, connection) =
            within(CONNECT_TIMEOUT, async { config.connect(tls).await.map_err(TargetError::from) }).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "target connection closed with an error");
            }
        });
        Ok(client)
    }
}

/// What registration learns about a target and its admin role.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version_num: i32,
    pub version: String,
    pub is_superuser: bool,
    pub can_create_role: bool,
    pub can_create_db: bool,
    /// The server's identity ([`pgplane_core::model::server_id`]).
    pub server_id: String,
}

impl ServerFacts {
    /// Why this server or admin role cannot be managed, if it cannot.
    pub fn unsuitability(&self, admin_user: &str) -> Option<String> {
        if self.version_num < MIN_SERVER_VERSION_NUM {
            return Some(format!(
                "the target runs PostgreSQL {}; pgplane needs PostgreSQL 13 or later",
                self.version
            ));
        }
        if !(self.is_superuser || (self.can_create_role && self.can_create_db)) {
            return Some(format!(
                "the admin role {admin_user:?} needs SUPERUSER, or both CREATEROLE and CREATEDB"
            ));
        }
        None
    }

    /// The major version as DigitalOcean shows it ("15", "17").
    pub fn major(version_num: i32) -> String {
        (version_num / 10000).to_string()
    }
}

/// What identifies the server a session is on (see [`pgplane_core::model::server_id`]).
pub(crate) const SERVER_ID_SQL: &str =
    "(SELECT system_identifier FROM pg_catalog.pg_control_system()), current_setting('port')::int4";

/// Connects to a target with its admin credentials (checked against `policy` first) and reads
/// what registration checks, within a deadline.
pub async fn probe(spec: &TargetSpec, policy: &TargetPolicy) -> Result<ServerFacts, TargetError> {
    let spec = spec.clone().checked(policy).await?;
    let client = spec.connect(&spec.database, SessionLimits::default()).await?;
    let sql = format!(
        "SELECT current_setting('server_version_num')::int4, current_setting('server_version'),
                rolsuper, rolcreaterole, rolcreatedb, {SERVER_ID_SQL}
           FROM pg_catalog.pg_roles WHERE rolname = current_user"
    );
    let row = within(EXCHANGE_TIMEOUT, async { Ok(client.query_one(&sql, &[]).await?) }).await?;
    let facts = ServerFacts {
        version_num: row.get(0),
        version: row.get(1),
        is_superuser: row.get(2),
        can_create_role: row.get(3),
        can_create_db: row.get(4),
        server_id: pgplane_core::model::server_id(row.get(5), row.get(6)),
    };
    Ok(facts)
}

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
        let server = (spec.addrs.iter().min().copied(), spec.port);
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
                spec.config(&spec.database, limits)?,
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

/// Every role (but PostgreSQL's own `pg_*` roles) and every non-template database on a target,
/// for listing what pgplane does not manage, with the server's identity (so that the caller can
/// tell whether the target is still the registered server). Read-only, within a deadline.
pub async fn list_roles_and_databases(
    spec: &TargetSpec,
    policy: &TargetPolicy,
) -> Result<(String, Vec<String>, Vec<String>), TargetError> {
    let spec = spec.clone().checked(policy).await?;
    let client = spec.connect(&spec.database, SessionLimits::default()).await?;
    within(EXCHANGE_TIMEOUT, async {
        let names = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get(0)).collect();
        let id = client.query_one(&format!("SELECT {SERVER_ID_SQL}"), &[]).await?;
        let roles = client
            .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' ORDER BY 1", &[])
            .await?;
        let databases = client
            .query("SELECT datname::text FROM pg_catalog.pg_database WHERE NOT datistemplate ORDER BY 1", &[])
            .await?;
        Ok((pgplane_core::model::server_id(id.get(0), id.get(1)), names(roles), names(databases)))
    })
    .await
}
