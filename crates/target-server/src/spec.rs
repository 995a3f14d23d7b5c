//! Where and how pgplane logs in to a target server: a registered cluster's admin connection
//! (its address checked against the target policy), the limits every session gets, deadlines
//! for exchanges with a target, and the one door every session goes through (budgeted, watched,
//! closed when dropped so that it never keeps a database from being dropped).

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use pgplane_core::model::Cluster;
use pgplane_core::secrets::Sealer;
use pgplane_core::store::AdminConnection;

use tokio::net::TcpStream;
use tokio_postgres::tls::MakeTlsConnect;

use crate::budget::{Opening, ServerKey, SessionBudget, SessionPermit};
use crate::error::TargetError;
use crate::policy::TargetPolicy;
use crate::wire::Wire;

/// How long connecting to a target may take, TLS and authentication included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session opened beside another (see [`TargetSpec::connect`]) and a pass's session
/// may wait for one of its server's permits.
pub const SESSION_WAIT: Duration = Duration::from_secs(30);

/// How long a one-off request (a preview, a listing, a registration probe) may wait for one of
/// its server's permits before it is answered 503.
pub const ONE_OFF_WAIT: Duration = Duration::from_secs(5);

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
    /// The budget its sessions count against, set with the addresses.
    budget: Option<SessionBudget>,
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
        Self { admin, addrs: Vec::new(), budget: None }
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
    /// connection when outside it, or in plaintext to an address it does not allow), counting
    /// its sessions against the policy's budget.
    pub async fn checked(mut self, policy: &TargetPolicy) -> Result<Self, TargetError> {
        let addrs = policy.resolve(&self.admin.host, self.admin.port).await?;
        policy.check_plaintext(&self.admin.host, &self.admin.sslmode, &addrs)?;
        self.addrs = addrs;
        self.budget = Some(policy.budget().clone());
        Ok(self)
    }

    /// The server this spec leads to, as the session budget knows it.
    pub fn server(&self) -> ServerKey {
        (self.addrs.iter().min().copied(), self.admin.port)
    }

    /// The budget this spec's sessions count against (set by [`TargetSpec::checked`]).
    pub fn budget(&self) -> Result<&SessionBudget, TargetError> {
        self.budget.as_ref().filter(|_| !self.addrs.is_empty()).ok_or_else(|| {
            TargetError::Internal("the target's address was not checked against the target policy".into())
        })
    }

    /// A tokio-postgres configuration for `database` on this target: pgplane's identity and
    /// limits, and channel binding required over TLS (so that tokio-postgres answers nothing
    /// but SCRAM-SHA-256-PLUS there). The socket is pgplane's own (see [`TargetSpec::connect`]).
    /// Prepared statements keep their first plan (`plan_cache_mode`): pgplane's statements read
    /// small catalogs by key, and planning them anew on every run cost the targets more than
    /// running them (a drift round over a fleet spent a quarter of the servers' time planning).
    fn config(&self, database: &str, limits: SessionLimits) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.admin.host)
            .port(self.admin.port)
            .user(&self.admin.user)
            .password(&self.admin.password)
            .dbname(database)
            .application_name(pgplane_core::instance::name())
            .ssl_mode(crate::tls::ssl_mode(&self.admin.sslmode))
            .channel_binding(crate::tls::channel_binding(&self.admin.sslmode))
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c plan_cache_mode=force_generic_plan",
                limits.statement_timeout.as_millis(),
                limits.lock_timeout.as_millis()
            ));
        config
    }

    /// Opens one more session to `database` for a caller that already holds one on this server
    /// (a pass or a report visiting another database; see [`Opening::Beside`]), waiting up to
    /// [`SESSION_WAIT`] for a permit. It closes when the returned client is dropped.
    pub async fn connect(
        &self,
        database: &str,
        limits: SessionLimits,
    ) -> Result<tokio_postgres::Client, TargetError> {
        self.open(database, limits, Opening::Beside, SESSION_WAIT).await
    }

    /// Opens a session to `database`, the caller's first on this server, waiting up to `wait`
    /// for one of the server's permits. It closes when the returned client is dropped.
    pub async fn connect_first(
        &self,
        database: &str,
        limits: SessionLimits,
        wait: Duration,
    ) -> Result<tokio_postgres::Client, TargetError> {
        self.open(database, limits, Opening::First, wait).await
    }

    /// The one door to a target: a permit of its server's budget, then a TCP connection to a
    /// checked address, the watched socket ([`crate::wire`]), TLS as `sslmode` asks, and
    /// authentication, within [`CONNECT_TIMEOUT`]. The session's connection runs in a task of
    /// its own, which holds the permit until the server has closed the session.
    async fn open(
        &self,
        database: &str,
        limits: SessionLimits,
        opening: Opening,
        wait: Duration,
    ) -> Result<tokio_postgres::Client, TargetError> {
        let permit = self.budget()?.acquire(self.server(), opening, wait).await?;
        let config = self.config(database, limits);
        within(CONNECT_TIMEOUT, async {
            let socket = self.socket().await?;
            let plaintext = self.admin.sslmode == "disable";
            let wire = Wire::new(socket, plaintext);
            if plaintext {
                let (client, connection) = config.connect_raw(wire, tokio_postgres::NoTls).await?;
                tokio::spawn(run(connection, permit));
                Ok(client)
            } else {
                let tls =
                    MakeTlsConnect::<Wire<TcpStream>>::make_tls_connect(&mut self.tls()?, &self.admin.host)
                        .map_err(|e| {
                        TargetError::Tls(format!("{:?} is not a usable TLS name: {e}", self.admin.host))
                    })?;
                let (client, connection) = config.connect_raw(wire, tls).await?;
                tokio::spawn(run(connection, permit));
                Ok(client)
            }
        })
        .await
    }

    /// A TCP connection to the first checked address that answers.
    async fn socket(&self) -> Result<TcpStream, TargetError> {
        let mut failure = String::new();
        for addr in &self.addrs {
            match TcpStream::connect((*addr, self.admin.port)).await {
                Ok(socket) => {
                    socket.set_nodelay(true).map_err(|e| TargetError::Connect(e.to_string()))?;
                    return Ok(socket);
                }
                Err(e) => failure = format!("error connecting to server: {e}"),
            }
        }
        Err(TargetError::Connect(failure))
    }

    /// The TLS connector for this target's sslmode.
    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TargetError> {
        crate::tls::connector(&self.admin.sslmode, self.admin.ca_certificate.as_deref())
    }
}

/// Runs a session's connection until it closes, then gives its permit back.
async fn run<S, T>(connection: tokio_postgres::Connection<S, T>, permit: SessionPermit)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "target connection closed with an error");
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: &str, sslmode: &str) -> TargetSpec {
        TargetSpec::new(AdminConnection {
            host: host.into(),
            port: 5432,
            user: "admin".into(),
            password: "secret".into(),
            database: "postgres".into(),
            sslmode: sslmode.into(),
            ca_certificate: None,
        })
    }

    #[tokio::test]
    async fn plaintext_to_an_address_other_than_loopback_is_refused_before_any_connection() {
        let policy = TargetPolicy::default();
        let refused = spec("10.255.255.1", "disable").checked(&policy).await.unwrap_err();
        assert!(matches!(refused, TargetError::Refused(_)), "{refused}");
        let allowed = spec("10.255.255.1", "require").checked(&policy).await.unwrap();
        assert_eq!(allowed.budget().unwrap(), policy.budget());
        spec("127.0.0.1", "disable").checked(&policy).await.unwrap();
        let anywhere = policy.with_plaintext_anywhere(true);
        spec("10.255.255.1", "disable").checked(&anywhere).await.unwrap();
    }

    /// A session's permit comes back only once the server has closed its end, after the
    /// session's Terminate: never while its backend may still count on the server.
    #[tokio::test]
    async fn a_permit_is_held_until_the_server_has_closed_the_session() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (terminated_tx, terminated) = tokio::sync::oneshot::channel();
        let (close, close_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let length = socket.read_u32().await.unwrap();
            let mut startup = vec![0u8; length as usize - 4];
            socket.read_exact(&mut startup).await.unwrap();
            // AuthenticationOk (a trusting server, in plaintext on loopback), then ReadyForQuery.
            socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
            let mut terminate = [0u8; 5];
            socket.read_exact(&mut terminate).await.unwrap();
            assert_eq!(terminate[0], b'X');
            terminated_tx.send(()).unwrap();
            close_rx.await.unwrap();
        });
        let policy = TargetPolicy::default().with_budget(SessionBudget::new(2));
        let mut target = spec("127.0.0.1", "disable");
        target.admin.port = port;
        let target = target.checked(&policy).await.unwrap();
        let client = target.connect_first("postgres", SessionLimits::default(), ONE_OFF_WAIT).await.unwrap();
        let free = || policy.budget().available(target.server(), Opening::First);
        assert!(!free(), "the session holds its permit");
        drop(client);
        terminated.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!free(), "still held: the server has not closed its end");
        close.send(()).unwrap();
        let mut waited = 0;
        while !free() {
            assert!(waited < 200, "the permit came back once the server closed its end");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
    }

    #[tokio::test]
    async fn an_unchecked_spec_opens_no_session() {
        let unchecked = spec("127.0.0.1", "disable");
        let refused = unchecked.connect_first("postgres", SessionLimits::default(), ONE_OFF_WAIT).await;
        assert!(matches!(refused, Err(TargetError::Internal(_))));
    }
}
