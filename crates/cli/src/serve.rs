//! `pgplane serve`: the gateway and the reconciler in one process (either can be switched
//! off), with migrations applied at start-up, old audit and drift events pruned, and a graceful
//! stop on SIGTERM or SIGINT: no new connections, requests and reconcile passes in flight get
//! `--shutdown-grace` to finish (passes still running then are cancelled), then exit code 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pgplane_app::{Api, Parts, Retention};
use pgplane_gateway::{FailureLimits, GatewayConfig, ServeLimits};
use pgplane_reconciler::ReconcilerConfig;
use pgplane_target_server::SessionLimits;
use pgplane_target_server::TargetPolicy;

use crate::config::ProcessArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    process: ProcessArgs,
    /// Address the REST API listens on.
    #[arg(long, env = "PGPLANE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of a separate listener serving Prometheus metrics at /metrics (off unless set;
    /// keep it away from API clients, e.g. 127.0.0.1:9090 or a pod-internal address).
    #[arg(long, env = "PGPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key-file.
    #[arg(long, env = "PGPLANE_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "PGPLANE_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<std::path::PathBuf>,
    /// Run the reconciler only (no REST API).
    #[arg(long, env = "PGPLANE_NO_GATEWAY", conflicts_with = "no_reconciler")]
    no_gateway: bool,
    /// Do not serve the web console at / (the API at /v2 is served either way).
    #[arg(long, env = "PGPLANE_NO_CONSOLE")]
    no_console: bool,
    /// Run the REST API only (another process reconciles).
    #[arg(long, env = "PGPLANE_NO_RECONCILER")]
    no_reconciler: bool,
    /// Seconds a write waits for its change to be applied on the target before answering
    /// with the object still pending.
    #[arg(long, env = "PGPLANE_APPLY_TIMEOUT", default_value_t = 10.0)]
    apply_timeout: f64,
    /// API requests a minute allowed per token (0: no limit).
    #[arg(long, env = "PGPLANE_RATE_LIMIT_PER_MINUTE", default_value_t = 1200)]
    rate_limit_per_minute: u32,
    /// Failed authentications a minute allowed per client address (the TCP peer: behind a
    /// reverse proxy, the proxy) before further attempts get 429 without being checked (0: no
    /// limit).
    #[arg(long, env = "PGPLANE_AUTH_FAILURES_PER_ADDRESS", default_value_t = FailureLimits::default().per_address)]
    auth_failures_per_address: u32,
    /// Failed authentications a minute allowed per token id before further attempts with that
    /// id get 429 without being checked (0: no limit). Cached valid tokens are not affected.
    #[arg(long, env = "PGPLANE_AUTH_FAILURES_PER_TOKEN", default_value_t = FailureLimits::default().per_token)]
    auth_failures_per_token: u32,
    /// Seconds a client has to send a request's headers (and to finish the TLS handshake); on
    /// a keep-alive HTTP/1.1 connection also the longest quiet time between requests.
    #[arg(long, env = "PGPLANE_HEADER_READ_TIMEOUT", default_value_t = ServeLimits::default().header_read_timeout.as_secs_f64())]
    header_read_timeout: f64,
    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, env = "PGPLANE_IDLE_TIMEOUT", default_value_t = ServeLimits::default().idle_timeout.as_secs_f64())]
    idle_timeout: f64,
    /// Client connections open at once; more wait until one closes. The soft limit on open
    /// files is raised to fit them (up to the hard limit).
    #[arg(long, env = "PGPLANE_MAX_CLIENT_CONNECTIONS", default_value_t = ServeLimits::default().max_connections)]
    max_client_connections: usize,
    /// Seconds between drift checks of every cluster.
    #[arg(long, env = "PGPLANE_RESYNC_INTERVAL", default_value_t = 60.0)]
    resync_interval: f64,
    /// Clusters reconciled at the same time.
    #[arg(long, env = "PGPLANE_MAX_CONCURRENT_PASSES", default_value_t = 8)]
    max_concurrent_passes: usize,
    /// statement_timeout, in seconds, for pgplane's sessions on targets.
    #[arg(long, env = "PGPLANE_TARGET_STATEMENT_TIMEOUT", default_value_t = 60.0)]
    target_statement_timeout: f64,
    /// lock_timeout, in seconds, for pgplane's sessions on targets.
    #[arg(long, env = "PGPLANE_TARGET_LOCK_TIMEOUT", default_value_t = 5.0)]
    target_lock_timeout: f64,
    /// Most sessions this process holds on one target server at once, however many clusters it
    /// hosts: every session counts (passes, previews, listings, probes); idle pooled sessions
    /// close after 10 s. At least 2 (a pass holds one while it visits another database).
    #[arg(long, env = "PGPLANE_MAX_SESSIONS_PER_SERVER", default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..))]
    max_sessions_per_server: u16,
    /// Clusters of one team reconciled at the same time (0: half of --max-concurrent-passes).
    #[arg(long, env = "PGPLANE_MAX_PASSES_PER_TEAM", default_value_t = 0)]
    max_passes_per_team: usize,
    /// Networks (comma-separated CIDRs or addresses) registered targets may be on; every
    /// address a target's host resolves to must be in one, or pgplane does not connect.
    #[arg(long, env = "PGPLANE_ALLOWED_TARGET_NETWORKS", default_value = pgplane_target_server::policy::DEFAULT_NETWORKS)]
    allowed_target_networks: String,
    /// Ports (comma-separated, ranges as 5432-5439) registered targets may listen on.
    #[arg(long, env = "PGPLANE_ALLOWED_TARGET_PORTS", default_value = pgplane_target_server::policy::DEFAULT_PORTS)]
    allowed_target_ports: String,
    /// Allow sslmode disable (plaintext, the admin password's SCRAM exchange included) to targets
    /// that are not on loopback.
    #[arg(long, env = "PGPLANE_ALLOW_PLAINTEXT_TARGETS")]
    allow_plaintext_targets: bool,
    /// Registration probes (POST /v2/databases, PUT …/pgplane) a minute per team (0: no limit).
    #[arg(long, env = "PGPLANE_REGISTRATION_PROBES_PER_MINUTE", default_value_t = 30)]
    registration_probes_per_minute: u32,
    /// Days audit events are kept (0: forever); older ones are deleted every hour.
    #[arg(long, env = "PGPLANE_AUDIT_RETENTION", default_value_t = 90, value_name = "DAYS")]
    audit_retention: u32,
    /// Seconds requests and reconcile passes in flight get to finish after SIGTERM or SIGINT;
    /// passes still running then are cancelled (the next pass, on any process, carries on).
    #[arg(long, env = "PGPLANE_SHUTDOWN_GRACE", default_value_t = pgplane_gateway::SHUTDOWN_GRACE.as_secs_f64())]
    shutdown_grace: f64,
    /// Days drift events are kept (0: forever); older ones are deleted every hour.
    #[arg(long, env = "PGPLANE_DRIFT_RETENTION", default_value_t = 90, value_name = "DAYS")]
    drift_retention: u32,
    /// Let users of a cluster that is alone on its server have REPLICATION
    /// (`pg_allow_replication`). Such a user can read the whole server: every database and
    /// every role's password verifier (a base backup copies them all).
    #[arg(long, env = "PGPLANE_ALLOW_REPLICATION_FOR_SOLE_TENANTS")]
    allow_replication_for_sole_tenants: bool,
    /// What a registration (or a confirmed move) does with a primary user that exists with
    /// memberships pgplane did not grant (members, ADMIN holders, memberships of other roles):
    /// `clean` adopts it and removes them; `refuse` answers 409 and changes nothing.
    #[arg(long, env = "PGPLANE_ADOPTED_PRIMARY_USER", default_value = "clean", value_parser = ["clean", "refuse"])]
    adopted_primary_user: String,
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{flag} must be a non-negative number of seconds"))
}

fn positive(value: f64, flag: &str) -> anyhow::Result<Duration> {
    let duration = seconds(value, flag)?;
    anyhow::ensure!(!duration.is_zero(), "--{flag} must be more than 0 seconds");
    Ok(duration)
}

/// Files the process needs besides client connections (metadata and target pools, listeners).
const OTHER_FILES: u64 = 1024;

/// Raises the soft limit on open files so that `max_connections` clients fit, or says how far
/// it could go.
fn ensure_open_files(max_connections: usize) {
    let wanted = max_connections as u64 + OTHER_FILES;
    match pgplane_gateway::raise_open_files_limit(wanted) {
        Some(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open files limit is below --max-client-connections plus headroom; raise the hard limit (ulimit -Hn) or lower --max-client-connections"
        ),
        _ => {}
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    args.process.log.init();
    let sealer = args.process.secret_key.sealer()?;
    let store = args.process.database.store()?;
    store.migrate().await.context("applying metadata migrations (is the metadata database reachable?)")?;

    let target_policy = TargetPolicy::parse(&args.allowed_target_networks, &args.allowed_target_ports)
        .map_err(|e| anyhow::anyhow!("--allowed-target-networks / --allowed-target-ports: {e}"))?
        .with_plaintext_anywhere(args.allow_plaintext_targets);
    let shutdown_grace = seconds(args.shutdown_grace, "shutdown-grace")?;
    let reconciler = ReconcilerConfig {
        resync_interval: seconds(args.resync_interval, "resync-interval")?,
        max_concurrent_passes: args.max_concurrent_passes,
        max_passes_per_team: args.max_passes_per_team,
        session_limits: SessionLimits {
            statement_timeout: seconds(args.target_statement_timeout, "target-statement-timeout")?,
            lock_timeout: seconds(args.target_lock_timeout, "target-lock-timeout")?,
        },
        target_policy: target_policy.clone(),
        shutdown_grace,
        max_sessions_per_server: args.max_sessions_per_server.into(),
        allow_replication_for_sole_tenants: args.allow_replication_for_sole_tenants,
    };
    let metrics = match args.metrics_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let api = if args.no_gateway { None } else { Some(api(&args, target_policy, shutdown_grace).await?) };
    let parts = Parts {
        api,
        reconciler,
        reconcile: !args.no_reconciler,
        metrics,
        retention: Some(Retention { audit_days: args.audit_retention, drift_days: args.drift_retention }),
    };
    let running = pgplane_app::start(store, sealer, parts).map_err(anyhow::Error::msg)?;
    let stopping = async {
        shutdown_signal().await;
        tracing::info!(grace_s = shutdown_grace.as_secs_f64(), "stopping");
    };
    let ended = running.run_until(stopping).await;
    tracing::info!("stopped");
    ended.map_err(anyhow::Error::msg)
}

/// The REST API part, its listener bound.
async fn api(args: &ServeArgs, target_policy: TargetPolicy, shutdown_grace: Duration) -> anyhow::Result<Api> {
    let config = GatewayConfig {
        apply_timeout: seconds(args.apply_timeout, "apply-timeout")?,
        rate_limit_per_minute: args.rate_limit_per_minute,
        auth_failures: FailureLimits {
            per_address: args.auth_failures_per_address,
            per_token: args.auth_failures_per_token,
        },
        target_policy,
        probes_per_minute: args.registration_probes_per_minute,
        console: !args.no_console,
        allow_replication_for_sole_tenants: args.allow_replication_for_sole_tenants,
        refuse_foreign_primary_user: args.adopted_primary_user == "refuse",
        ..GatewayConfig::default()
    };
    let limits = ServeLimits {
        header_read_timeout: positive(args.header_read_timeout, "header-read-timeout")?,
        idle_timeout: positive(args.idle_timeout, "idle-timeout")?,
        max_connections: args.max_client_connections.max(1),
        shutdown_grace,
    };
    ensure_open_files(limits.max_connections);
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let read = |path: &std::path::PathBuf| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            Some(pgplane_gateway::server_config(&read(cert)?, &read(key)?).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    Ok(Api { listener: bind(args.listen).await?, tls, config, limits })
}

async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
