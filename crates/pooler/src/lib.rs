//! pgplane-pooler: `pgplane pooler`, the process that runs beside one target server and serves
//! its clusters' connection pools on real PgBouncers, one per cluster with pools (its own port,
//! logins and trusted sources, so that clusters of different teams on one server share
//! nothing). It reads the desired pools from the metadata database, writes each PgBouncer's
//! files, starts or reloads it, checks what it runs (`SHOW DATABASES`) and repairs and records
//! drift, and reports each pool's status back. It holds no state of its own: several pgplane
//! replicas, a restart, or a laptop all see the same pools (see ARCHITECTURE.md, Pools).

mod bouncer;
mod render;
mod serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use pgplane_core::model::{Cluster, ServerIdentity};
use pgplane_core::secrets::Sealer;
use pgplane_core::store::{
    PoolerRegistration, Store, POOLER_LEASE_SECS, POOLS_CHANNEL, RECONCILED_CHANNEL, WAKE_CHANNEL,
};
use pgplane_target_server::{TargetPolicy, TargetSpec};
use uuid::Uuid;

pub use bouncer::Launcher;

/// How often the pooler looks again without being told (expiries, heartbeats, drift).
const ROUND: Duration = Duration::from_secs(1);
/// How often the pooler checks again that a cluster's server is the one it is registered on,
/// and reads its connection slots.
const PROBE_EVERY: Duration = Duration::from_secs(60);
/// A probe that failed is tried again after this long.
const PROBE_RETRY: Duration = Duration::from_secs(10);
/// How often the pooler's row is written when nothing in it changed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What `pgplane pooler` is told.
#[derive(Debug, Clone)]
pub struct PoolerConfig {
    /// The server it sits beside, as clusters are registered with it (host and port).
    pub server_host: String,
    pub server_port: u16,
    /// The address PgBouncers listen on.
    pub listen_host: String,
    /// The host pools' connection strings name.
    pub advertise_host: String,
    /// The ports PgBouncers may listen on, one per cluster.
    pub ports: (u16, u16),
    /// The folder of the PgBouncers' files and sockets.
    pub run_dir: PathBuf,
    pub launcher: Launcher,
    /// Server connections kept out of every pool, for pgplane's own sessions and for
    /// administration.
    pub reserve: i32,
    /// The percentage of the pools' server connections one team's pools may use.
    pub team_share: i32,
    /// Client connections each PgBouncer accepts.
    pub max_client_conn: u32,
    /// The addresses the pooler may reach (the server's).
    pub policy: TargetPolicy,
}

/// Runs the pooler until `shutdown` completes; then stops the PgBouncers it runs.
pub async fn run(
    config: PoolerConfig,
    store: Store,
    sealer: Sealer,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(&config.run_dir)
        .await
        .with_context(|| format!("creating {}", config.run_dir.display()))?;
    config.launcher.check_reachable(&config.run_dir)?;
    // PgBouncer's user (when it is not the pooler's) may pass through to its own folders, not
    // list or read the others.
    tokio::fs::set_permissions(&config.run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .await
        .with_context(|| format!("setting the mode of {}", config.run_dir.display()))?;
    let admin_password = admin_password(&config.run_dir).await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(store.pool()).await?;
    listener.listen_all([POOLS_CHANNEL, RECONCILED_CHANNEL, WAKE_CHANNEL]).await?;
    let mut pooler = Pooler {
        config,
        store,
        sealer,
        admin_password,
        instance_id: Uuid::new_v4(),
        bouncers: HashMap::new(),
        probes: HashMap::new(),
        slots: None,
        registered: None,
    };
    pooler.claim().await?;
    tracing::info!(
        server = %format!("{}:{}", pooler.config.server_host, pooler.config.server_port),
        ports = %format!("{}-{}", pooler.config.ports.0, pooler.config.ports.1),
        "pooler started"
    );
    tokio::pin!(shutdown);
    loop {
        if let Err(e) = pooler.round().await {
            if e.is::<Displaced>() {
                pooler.stop_all().await;
                return Err(e);
            }
            tracing::warn!(error = %format!("{e:#}"), "pooler round failed; trying again");
        }
        let listening = tokio::select! {
            () = &mut shutdown => break,
            heard = listener.try_recv() => heard.is_ok(),
            () = tokio::time::sleep(ROUND) => true,
        };
        // The metadata database is out of reach: do not spin.
        if !listening {
            tokio::time::sleep(ROUND).await;
        }
    }
    pooler.stop_all().await;
    let (host, port) = (&pooler.config.server_host, i32::from(pooler.config.server_port));
    if let Err(e) = pooler.store.release_pooler(host, port, pooler.instance_id).await {
        tracing::warn!(error = %e, "could not release the pooler's row; the next pooler waits for it");
    }
    Ok(())
}

/// Another pooler for the same server holds its row: this one must not serve (both would claim
/// the same ports).
#[derive(Debug)]
struct Displaced(String);

impl std::fmt::Display for Displaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another `pgplane pooler` serves {} (it was heard from within the last {POOLER_LEASE_SECS} s): \
             run one pooler per server",
            self.0
        )
    }
}

impl std::error::Error for Displaced {}

/// The pooler's state between rounds.
struct Pooler {
    config: PoolerConfig,
    store: Store,
    sealer: Sealer,
    admin_password: String,
    /// This process, in the server's row of `poolers`.
    instance_id: Uuid,
    /// The PgBouncer of each cluster with pools, with the files last written for it.
    bouncers: HashMap<Uuid, serve::Served>,
    /// Each cluster's last probe: when, and whether its server is the one it is registered on.
    probes: HashMap<Uuid, Probe>,
    /// The server's connection slots, once read.
    slots: Option<i32>,
    /// When the pooler's row was last written, and with what budget.
    registered: Option<(Instant, i32)>,
}

/// What a probe of a cluster's server found.
#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    /// Ok: the server at the address is the cluster's; Err: why its pools are not served.
    verdict: Result<(), String>,
    failed: bool,
}

impl Pooler {
    /// One round: probe, register, serve every cluster with pools, stop what is no longer
    /// wanted.
    async fn round(&mut self) -> anyhow::Result<()> {
        let (host, port) = (self.config.server_host.clone(), i32::from(self.config.server_port));
        let served = self.store.served_clusters(&host, port).await?;
        for cluster in served.iter().map(|s| &s.cluster) {
            self.probe(cluster).await;
        }
        self.learn_slots().await?;
        self.register().await?;
        let wanted: Vec<Uuid> = served.iter().map(|s| s.cluster.cluster_id).collect();
        for cluster in served {
            let verdict = self.probes.get(&cluster.cluster.cluster_id).map(|p| p.verdict.clone());
            let verdict = verdict.unwrap_or_else(|| Err("the pooler has not reached the server yet".into()));
            if let Err(e) = self.serve(cluster, verdict).await {
                tracing::warn!(error = %format!("{e:#}"), "serving a cluster's pools failed");
            }
        }
        let gone: Vec<Uuid> = self.bouncers.keys().filter(|id| !wanted.contains(id)).copied().collect();
        for id in gone {
            if let Some(served) = self.bouncers.remove(&id) {
                served.bouncer.stop(&self.admin_password).await;
            }
        }
        Ok(())
    }

    /// Reads, with the cluster's admin role, whether the server at the pooler's address is the
    /// one the cluster is registered on, and the server's connection slots (every
    /// [`PROBE_EVERY`]).
    async fn probe(&mut self, cluster: &Cluster) {
        let due = match self.probes.get(&cluster.cluster_id) {
            None => true,
            Some(p) => p.at.elapsed() >= if p.failed { PROBE_RETRY } else { PROBE_EVERY },
        };
        if !due {
            return;
        }
        let facts = match TargetSpec::of(cluster, &self.sealer) {
            Ok(spec) => pgplane_target_server::probe(&spec, &self.config.policy).await,
            Err(e) => Err(e),
        };
        let previous = self.probes.get(&cluster.cluster_id).map(|p| p.verdict.clone());
        let probe = match facts {
            Ok(facts) => {
                self.slots = Some(facts.connection_slots);
                let verdict = match cluster.identify_server(&facts.server_id) {
                    ServerIdentity::Registered => Ok(()),
                    ServerIdentity::Other { registered } => Err(format!(
                        "the server at {}:{} is {}, not the server this cluster is registered on ({registered}): \
                         its pools are not served",
                        self.config.server_host, self.config.server_port, facts.server_id
                    )),
                    ServerIdentity::Unknown => {
                        Err("the cluster's server is not known yet (its next reconcile pass learns it)".into())
                    }
                };
                Probe { at: Instant::now(), verdict, failed: false }
            }
            // A passing failure keeps the last verdict; the first one says why nothing is served.
            Err(e) => Probe {
                at: Instant::now(),
                verdict: previous.unwrap_or_else(|| {
                    Err(format!("the pooler cannot reach the server with the cluster's admin role: {e}"))
                }),
                failed: true,
            },
        };
        self.probes.insert(cluster.cluster_id, probe);
    }

    /// Writes the pooler's row when its budget changed or a heartbeat is due.
    /// Takes the server's row at start, waiting while another pooler might still hold it (a
    /// pooler killed outright leaves its row until its heartbeat ages); fails if one does.
    async fn claim(&mut self) -> anyhow::Result<()> {
        self.learn_slots().await?;
        let deadline = Instant::now() + Duration::from_secs_f64(POOLER_LEASE_SECS + 5.0);
        loop {
            match self.register().await {
                Err(e) if e.is::<Displaced>() && Instant::now() < deadline => {
                    tracing::info!("another pooler holds this server's row; waiting for it to go");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Reads the server's connection slots through any cluster registered at its address, until
    /// they are known (the budget the pooler registers is drawn from them).
    async fn learn_slots(&mut self) -> anyhow::Result<()> {
        if self.slots.is_none() {
            let (host, port) = (&self.config.server_host, i32::from(self.config.server_port));
            if let Some(cluster) = self.store.first_cluster_at(host, port).await? {
                self.probe(&cluster).await;
            }
        }
        Ok(())
    }

    async fn register(&mut self) -> anyhow::Result<()> {
        let budget = self.slots.map_or(0, |s| (s - self.config.reserve).max(0));
        if self.registered.is_some_and(|(at, b)| b == budget && at.elapsed() < HEARTBEAT_EVERY) {
            return Ok(());
        }
        let held = self
            .store
            .register_pooler(&PoolerRegistration {
                server_host: self.config.server_host.clone(),
                server_port: i32::from(self.config.server_port),
                advertise_host: self.config.advertise_host.clone(),
                port_first: i32::from(self.config.ports.0),
                port_last: i32::from(self.config.ports.1),
                server_connections: budget,
                team_share: self.config.team_share,
                instance_id: self.instance_id,
            })
            .await?;
        if !held {
            let server = format!("{}:{}", self.config.server_host, self.config.server_port);
            return Err(Displaced(server).into());
        }
        self.registered = Some((Instant::now(), budget));
        Ok(())
    }

    /// Stops every PgBouncer (the pooler is shutting down).
    async fn stop_all(&mut self) {
        for (_, served) in self.bouncers.drain() {
            served.bouncer.stop(&self.admin_password).await;
        }
    }
}

/// The admin console's password: kept in the run folder (readable by the pooler alone), so that
/// a PgBouncer left running by an earlier pooler can be taken over.
async fn admin_password(run_dir: &Path) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let path = run_dir.join("admin-password");
    if let Ok(existing) = tokio::fs::read_to_string(&path).await {
        if !existing.trim().is_empty() {
            return Ok(existing.trim().to_string());
        }
    }
    let password = pgplane_core::passwords::generate_password();
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .await
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(password.as_bytes()).await?;
    Ok(password)
}
