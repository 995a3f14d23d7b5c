//! `pgplane pooler`: runs beside one target server and serves its clusters' connection pools on
//! PgBouncer (see crates/pooler). It needs the metadata database and the secret key, as
//! `serve` does, and stops its PgBouncers on SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use pgplane_pooler::{Launcher, PoolerConfig};
use pgplane_target_server::TargetPolicy;

use crate::config::ProcessArgs;

#[derive(Args)]
pub struct PoolerArgs {
    #[command(flatten)]
    process: ProcessArgs,
    /// The server this pooler sits beside, as its clusters are registered (HOST:PORT, the
    /// `--host` and `--port` of `pgplane databases create`): their pools are served here.
    #[arg(long, env = "PGPLANE_POOLER_SERVER", value_name = "HOST:PORT")]
    server: String,
    /// The address PgBouncers listen on.
    #[arg(long, env = "PGPLANE_POOLER_LISTEN_HOST", default_value = "127.0.0.1")]
    listen_host: String,
    /// The host pools' connection strings name [default: --listen-host].
    #[arg(long, env = "PGPLANE_POOLER_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// The ports PgBouncers may listen on: one per cluster with pools (FIRST-LAST).
    #[arg(long, env = "PGPLANE_POOLER_PORTS", default_value = "25061-25160", value_name = "FIRST-LAST")]
    ports: String,
    /// The folder of the PgBouncers' files and sockets (kept private to the pooler and
    /// PgBouncer) [default: <temp dir>/pgplane-pooler].
    #[arg(long, env = "PGPLANE_POOLER_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// The pgbouncer executable.
    #[arg(long, env = "PGPLANE_PGBOUNCER", default_value = "pgbouncer")]
    pgbouncer: PathBuf,
    /// The system user PgBouncer runs as when the pooler runs as root (PgBouncer refuses root).
    #[arg(long, env = "PGPLANE_PGBOUNCER_USER", default_value = "postgres")]
    pgbouncer_user: String,
    /// Server connections no pool may use: room for pgplane's own sessions
    /// (PGPLANE_MAX_SESSIONS_PER_SERVER, 10 by default) and for administration.
    #[arg(long, env = "PGPLANE_POOLER_RESERVE", default_value_t = 13)]
    reserve: u16,
    /// The percentage of the pools' server connections one team's pools may use (the rest is
    /// left to other teams with clusters on the server; 100 on a server of one team).
    #[arg(long, env = "PGPLANE_POOLER_TEAM_SHARE", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    team_share: u8,
    /// Client connections each cluster's PgBouncer accepts.
    #[arg(long, env = "PGPLANE_POOLER_MAX_CLIENT_CONN", default_value_t = 1000)]
    max_client_conn: u32,
}

pub async fn run(args: PoolerArgs) -> anyhow::Result<()> {
    args.process.log.init();
    let (server_host, server_port) = host_and_port(&args.server)?;
    let ports = port_range(&args.ports)?;
    let addresses: Vec<String> = tokio::net::lookup_host((server_host.as_str(), server_port))
        .await
        .with_context(|| format!("resolving {server_host}"))?
        .map(|a| a.ip().to_string())
        .collect();
    // The pooler reaches only its server, as its clusters were registered (their sslmode was
    // checked against serve's policy then).
    let policy = TargetPolicy::parse(&addresses.join(","), &server_port.to_string())
        .map_err(anyhow::Error::msg)?
        .with_plaintext_anywhere(true);
    let config = PoolerConfig {
        advertise_host: args.advertise_host.clone().unwrap_or_else(|| args.listen_host.clone()),
        server_host,
        server_port,
        listen_host: args.listen_host.clone(),
        ports,
        run_dir: args.run_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("pgplane-pooler")),
        launcher: Launcher::new(args.pgbouncer.clone(), &args.pgbouncer_user)?,
        reserve: i32::from(args.reserve),
        team_share: i32::from(args.team_share),
        max_client_conn: args.max_client_conn,
        policy,
    };
    let store = args.process.database.store()?;
    let sealer = args.process.secret_key.sealer()?;
    pgplane_pooler::run(config, store, sealer, crate::serve::shutdown_signal()).await
}

/// `HOST:PORT`, the host possibly a bracketed IPv6 address.
fn host_and_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| anyhow!("--server {text:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().map_err(|_| anyhow!("--server {text:?}: {port:?} is not a port"))?;
    if host.is_empty() {
        bail!("--server {text:?} has no host");
    }
    Ok((host.to_string(), port))
}

/// `FIRST-LAST`.
fn port_range(text: &str) -> anyhow::Result<(u16, u16)> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    match (first.trim().parse::<u16>(), last.trim().parse::<u16>()) {
        (Ok(first), Ok(last)) if first >= 1 && first <= last => Ok((first, last)),
        _ => bail!("--ports {text:?} is not a range of ports such as 25061-25160"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_and_port_ranges_parse() {
        assert_eq!(host_and_port("127.0.0.1:5432").unwrap(), ("127.0.0.1".into(), 5432));
        assert_eq!(host_and_port("[::1]:6543").unwrap(), ("::1".into(), 6543));
        assert!(host_and_port("db").is_err() && host_and_port(":5432").is_err());
        assert_eq!(port_range("25061-25160").unwrap(), (25061, 25160));
        assert_eq!(port_range("7000").unwrap(), (7000, 7000));
        assert!(port_range("9-1").is_err() && port_range("a-b").is_err());
    }
}
