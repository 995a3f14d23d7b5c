//! What every scenario shares: the configuration, the pgplane process, the metadata server,
//! the main target and its registered cluster, and small helpers over them (pre-computed
//! SCRAM verifiers, role counts, session counters, pass events of a phase).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::containers::Server;
use crate::cpu::Watched;
use crate::pgplane::{PassStats, Pgplane};

/// The bench's parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub runs: usize,
    pub users: usize,
    pub user_concurrency: usize,
    pub databases: usize,
    pub db_concurrency: usize,
    pub read_seconds: u64,
    pub read_concurrency: Vec<usize>,
    pub scale_targets: usize,
    pub scale_clusters: Vec<usize>,
    pub scale_users: Vec<usize>,
    pub scale_repeats: usize,
    pub flood_rate: usize,
    pub flood_addresses: usize,
    pub replica_users: usize,
    pub replica_rounds: usize,
    pub replica_kills: usize,
    pub fleet_servers: usize,
    pub fleet_clusters: usize,
    pub fleet_users: usize,
    pub fleet_probe_creates: usize,
    /// Scenario 8: the rotation's grace (0 skips it) and the leases reaped (0 skips them).
    pub rotation_grace_secs: u64,
    pub leases: usize,
    /// Scenario 9: seconds of each pgbench round through a pool (0 skips it), and its rounds.
    pub pool_seconds: u64,
    pub pool_rounds: usize,
    pub pg_major: u32,
}

pub struct Ctx {
    pub config: Config,
    pub pgplane: Pgplane,
    pub meta: Server,
    pub target: Server,
    /// The servers' postmasters, whose CPU time is counted (see `cpu`).
    pub meta_pid: u32,
    pub target_pid: u32,
    pub cluster_id: String,
    pub target_version_num: i32,
    pub primary_user: String,
    pub work_dir: PathBuf,
}

impl Ctx {
    /// The processes whose CPU time a phase counts: pgplane's (as it runs now) and the two
    /// servers'.
    pub fn cpu(&self) -> Watched {
        Watched { pgplane: self.pgplane.pid, meta: self.meta_pid, target: self.target_pid }
    }

    /// A path of the API under this cluster.
    pub fn cluster_path(&self, rest: &str) -> String {
        format!("/v2/databases/{}{rest}", self.cluster_id)
    }

    /// How many of `names` exist as roles on the main target.
    pub async fn roles_present(&self, names: &[String]) -> Result<i64> {
        let client = self.target.session("postgres").await?;
        let row = client
            .query_one("SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = ANY($1)", &[&names])
            .await?;
        Ok(row.get(0))
    }

    /// How many of `names` exist as databases on the main target.
    pub async fn databases_present(&self, names: &[String]) -> Result<i64> {
        let client = self.target.session("postgres").await?;
        let row = client
            .query_one("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = ANY($1)", &[&names])
            .await?;
        Ok(row.get(0))
    }

    /// Sessions ever opened on the main target (pg_stat_database.sessions, PostgreSQL 14+).
    pub async fn target_sessions(&self) -> Result<i64> {
        // Stats of ended sessions are flushed when they end; give the last ones a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = self.target.session("postgres").await?;
        let row = client
            .query_one("SELECT coalesce(sum(sessions), 0)::int8 FROM pg_catalog.pg_stat_database", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Waits until every cluster of `ids` has converged (its desired state applied, no error),
    /// polling every `poll`; `what` names them in the error after `within`.
    pub async fn converged(
        &self,
        ids: &[String],
        what: &str,
        within: Duration,
        poll: Duration,
    ) -> Result<()> {
        let client = self.meta.session("pgplane").await?;
        let deadline = Instant::now() + within;
        loop {
            let row = client
                .query_one(
                    "SELECT count(*) FROM clusters WHERE cluster_id::text = ANY($1)
                        AND generation = reconciled_generation AND last_error IS NULL",
                    &[&ids],
                )
                .await?;
            if row.get::<_, i64>(0) == ids.len() as i64 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() <= deadline,
                "{what} did not converge within {} s",
                within.as_secs()
            );
            tokio::time::sleep(poll).await;
        }
    }

    /// The main cluster's passes since `since`.
    pub fn passes(&self, since: DateTime<Utc>) -> Result<PassStats> {
        let events = self.pgplane.passes_since(since)?;
        Ok(PassStats::of(&events, &self.cluster_id))
    }
}

/// `n` SCRAM-SHA-256 verifiers of fresh random passwords, computed with pgplane-core on all
/// cores before the clock starts. Also returns the cost of one verifier on one core.
pub async fn verifiers(n: usize) -> Result<(Vec<String>, Duration)> {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let chunk = n.div_ceil(cores).max(1);
    let tasks: Vec<_> = (0..n)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(n - start);
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let v: Vec<String> = (0..len)
                    .map(|_| {
                        let password = pgplane_core::passwords::generate_password();
                        pgplane_core::passwords::scram_verifier(&password)
                    })
                    .collect();
                (v, t.elapsed() / len.max(1) as u32)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    let mut per = Vec::new();
    for t in tasks {
        let (v, each) = t.await.context("computing verifiers")?;
        all.extend(v);
        per.push(each);
    }
    per.sort();
    Ok((all, per.get(per.len() / 2).copied().unwrap_or_default()))
}
