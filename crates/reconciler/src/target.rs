//! Connections to target servers: the connection parameters of a registered cluster, the probe
//! run at registration, one small deadpool-postgres pool per cluster (to its admin database),
//! and one-off connections to other databases (closed at once, so that they never keep a
//! database from being dropped).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pgplane_core::model::Cluster;
use pgplane_core::secrets::Sealer;
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

/// One small pool per cluster, to its admin database; rebuilt when the registration changes.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<Uuid, (TargetSpec, Pool)>>,
}

impl Pools {
    /// The pool for a cluster, created on first use.
    pub(crate) fn get(
        &self,
        cluster_id: Uuid,
        spec: &TargetSpec,
        limits: SessionLimits,
    ) -> Result<Pool, TargetError> {
        let mut pools = self.pools.lock().expect("pools lock");
        if let Some((known, pool)) = pools.get(&cluster_id) {
            if known == spec {
                return Ok(pool.clone());
            }
        }
        let manager = Manager::from_config(
            spec.config(&spec.database, limits)?,
            spec.tls()?,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(2)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .expect("pool configuration is valid");
        if let Some((_, old)) = pools.insert(cluster_id, (spec.clone(), pool.clone())) {
            old.close();
        }
        Ok(pool)
    }

    /// Closes pools of clusters that are no longer registered.
    pub(crate) fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.pools.lock().expect("pools lock").retain(|id, (_, pool)| {
            let kept = keep(id);
            if !kept {
                pool.close();
            }
            kept
        });
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
