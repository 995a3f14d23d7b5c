//! Where and how pgplane logs in to a target server: a registered cluster's admin connection
//! (its address checked against the target policy), the limits every session gets, deadlines
//! for exchanges with a target, and one-off connections (closed when dropped, so that they
//! never keep a database from being dropped).

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use pgplane_core::model::Cluster;
use pgplane_core::secrets::Sealer;
use pgplane_core::store::AdminConnection;

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

/// Oldest PostgreSQL major version pgplane manages (DROP DATABASE ... WITH (FORCE) is 13+).
pub const MIN_SERVER_VERSION_NUM: i32 = 130000;

/// Where and how to log in to a target as its admin, ready to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub admin: AdminConnection,
    /// The addresses `admin.host` resolved to, all allowed by the target policy
    /// ([`TargetSpec::checked`]); no connection is made without them.
    pub addrs: Vec<IpAddr>,
}

impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.admin.fmt(f)
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
    /// A spec for `admin`, its address not yet checked.
    pub fn new(admin: AdminConnection) -> Self {
        Self { admin, addrs: Vec::new() }
    }

    /// The admin connection of a registered cluster, its password unsealed.
    pub fn of(cluster: &Cluster, sealer: &Sealer) -> Result<Self, TargetError> {
        let password = sealer
            .open_str(&cluster.admin_password_sealed, &Cluster::admin_password_context(cluster.cluster_id))?;
        Ok(Self::new(AdminConnection {
            host: cluster.host.clone(),
            port: u16::try_from(cluster.port).unwrap_or(5432),
            user: cluster.admin_user.clone(),
            password,
            database: cluster.admin_database.clone(),
            sslmode: cluster.sslmode.clone(),
            ca_certificate: cluster.ca_certificate.clone(),
        }))
    }

    /// The database the admin connection logs in to.
    pub fn admin_database(&self) -> &str {
        &self.admin.database
    }

    /// This spec with its host resolved and checked against `policy` (refused before any
    /// connection when outside it).
    pub async fn checked(mut self, policy: &TargetPolicy) -> Result<Self, TargetError> {
        self.addrs = policy.resolve(&self.admin.host, self.admin.port).await?;
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
            config.host(&self.admin.host).hostaddr(*addr).port(self.admin.port);
        }
        config
            .user(&self.admin.user)
            .password(&self.admin.password)
            .dbname(database)
            .application_name("pgplane")
            .connect_timeout(CONNECT_TIMEOUT)
            .ssl_mode(crate::tls::ssl_mode(&self.admin.sslmode))
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={}",
                limits.statement_timeout.as_millis(),
                limits.lock_timeout.as_millis()
            ));
        Ok(config)
    }

    /// The TLS connector for this target's sslmode.
    pub fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TargetError> {
        crate::tls::connector(&self.admin.sslmode, self.admin.ca_certificate.as_deref())
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
