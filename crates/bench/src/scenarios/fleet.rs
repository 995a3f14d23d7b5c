//! Scenario 7, a fleet: a thousand clusters on one pgplane process, several per PostgreSQL
//! server (each with its own primary user and default database, plus a few users). Measures
//! a full drift round, the metadata load while idle against the small fleet registered
//! before it, pgplane's peak memory, the sessions pgplane holds on each target server idle
//! and under load, and user creates during a drift round against idle.
//!
//! Method. Clusters are registered through the API (8 at a time, each answered once its
//! primary user and default database exist) and users added (16 at a time). Sessions are
//! `pg_stat_activity` rows of applications `pgplane/…` on each fleet server, sampled every
//! 100 ms by a session of the bench's own. The idle metadata load is the transactions
//! committed or rolled back in the metadata database (`pg_stat_database`) over 10 s with
//! nothing to do (no request, no pass due: pgplane's resync interval is longer than the
//! bench), read from a session on another database. A drift round is started as in scenario
//! 4 (every fleet cluster's `last_resync_at` moved one day back) and ends when every one has
//! a new `last_resync_at`; its time is from the first pass's start to the last one's end.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::Utc;
use serde_json::json;

use crate::api::Api;
use crate::containers::Server;
use crate::ctx::Ctx;
use crate::load::{run_count, run_while, LoadResult};
use crate::pgplane::registration;

#[derive(Debug, Clone, Default)]
pub struct FleetResult {
    pub servers: usize,
    pub clusters: usize,
    pub users_per_cluster: usize,
    pub max_connections: i64,
    pub register_secs: f64,
    pub populate_secs: f64,
    /// Clusters registered before the fleet (the small fleet) and the idle metadata load then.
    pub small_clusters: usize,
    pub idle_tps_small: f64,
    pub idle_tps_fleet: f64,
    pub round_secs: Vec<f64>,
    pub round_passes: Vec<usize>,
    /// Peak sessions on each fleet server: while registering (probes included), while adding
    /// users and during the drift rounds; then once idle.
    pub sessions_registering: Vec<i64>,
    pub sessions_loaded: Vec<i64>,
    pub sessions_idle: Vec<i64>,
    pub create_idle: (f64, f64),
    pub create_in_round: (f64, f64),
    pub creates_in_round: usize,
    pub peak_kib: u64,
    pub idle_kib: u64,
}

pub async fn run(ctx: &Ctx, servers: &[Server]) -> Result<FleetResult> {
    let c = &ctx.config;
    let api = &ctx.pgplane.api;
    let meta = ctx.meta.session("pgplane").await?;
    let small: i64 = meta.query_one("SELECT count(*) FROM clusters", &[]).await?.get(0);
    let mut out = FleetResult {
        servers: servers.len(),
        clusters: c.fleet_clusters,
        users_per_cluster: c.fleet_users,
        small_clusters: small as usize,
        ..FleetResult::default()
    };
    out.max_connections = servers[0]
        .session("postgres")
        .await?
        .query_one("SELECT current_setting('max_connections')::int8", &[])
        .await?
        .get(0);
    out.idle_tps_small = idle_metadata_tps(ctx).await?;
    ctx.pgplane.reset_peak();

    let sampler = Sampler::start(servers).await?;
    let bodies: Arc<Vec<serde_json::Value>> = Arc::new(
        (0..c.fleet_clusters)
            .map(|i| {
                let mut body = registration(&format!("fleet-{i:04}"), &servers[i % servers.len()].pg);
                body["pgplane"]["primary_user"] = json!(format!("fleet_admin_{i:04}"));
                body["pgplane"]["default_database"] = json!(format!("fleet_db_{i:04}"));
                body
            })
            .collect(),
    );
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); c.fleet_clusters]));
    let t = Instant::now();
    let registered = {
        let (api, bodies, ids) = (api.clone(), bodies.clone(), ids.clone());
        run_count(c.fleet_clusters, 8, move |i| {
            let (api, body, ids) = (api.clone(), bodies[i].clone(), ids.clone());
            async move {
                let id = api.register(body).await.map_err(|e| e.to_string())?;
                ids.lock().expect("ids")[i] = id;
                Ok(())
            }
        })
        .await
    };
    registered.check("registering the fleet")?;
    out.register_secs = t.elapsed().as_secs_f64();
    out.sessions_registering = sampler.take();
    let ids: Arc<Vec<String>> = Arc::new(ids.lock().expect("ids").clone());

    let t = Instant::now();
    let n = ids.len();
    let added = run_count(n * c.fleet_users, c.user_concurrency, creates(api, &ids, "fu", n)).await;
    added.check("adding users to the fleet")?;
    out.populate_secs = t.elapsed().as_secs_f64();
    settle(ctx, &ids).await?;
    let mut loaded = sampler.take();

    // Idle: pooled sessions close after 10 s unused.
    tokio::time::sleep(Duration::from_secs(12)).await;
    sampler.take();
    tokio::time::sleep(Duration::from_secs(3)).await;
    out.sessions_idle = sampler.take();
    out.idle_tps_fleet = idle_metadata_tps(ctx).await?;
    out.idle_kib = ctx.pgplane.memory()?.rss_kib;

    let idle = run_count(c.fleet_probe_creates, 4, creates(api, &ids, "fi", n)).await;
    idle.check("user creates on an idle fleet")?;
    out.create_idle = idle.p50_p99_ms();
    sampler.take();

    let mut in_round = LoadResult::default();
    for repeat in 0..2 {
        let poked_at = Utc::now();
        meta.execute(
            "UPDATE clusters SET last_resync_at = now() - interval '1 day' WHERE cluster_id::text = ANY($1)",
            &[&*ids],
        )
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let writer =
            tokio::spawn(creates_until(api.clone(), ids.clone(), format!("fr{repeat}"), stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done: i64 = meta
                .query_one(
                    "SELECT count(*) FROM clusters WHERE cluster_id::text = ANY($1)
                        AND last_resync_at >= $2::text::timestamptz",
                    &[&*ids, &poked_at.to_rfc3339()],
                )
                .await?
                .get(0);
            if done == n as i64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the fleet's drift round did not finish within 300 s ({done} of {n})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let writes = writer.await?;
        writes.check("user creates during a drift round")?;
        in_round.completed += writes.completed;
        in_round.latencies.extend(writes.latencies);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events: Vec<_> =
            ctx.pgplane.passes_since(poked_at)?.into_iter().filter(|e| ids.contains(&e.cluster_id)).collect();
        let first = events.iter().map(|e| e.started_at()).min().unwrap_or(poked_at);
        let last = events.iter().map(|e| e.finished_at).max().unwrap_or(poked_at);
        out.round_secs.push((last - first).num_milliseconds() as f64 / 1e3);
        out.round_passes.push(events.len());
    }
    out.creates_in_round = in_round.completed;
    out.create_in_round = in_round.p50_p99_ms();
    for (l, now) in loaded.iter_mut().zip(sampler.take()) {
        *l = (*l).max(now);
    }
    out.sessions_loaded = loaded;
    out.peak_kib = ctx.pgplane.memory()?.hwm_kib;
    sampler.stop();
    Ok(out)
}

/// A job creating a user on cluster `i % n` (role names are server-wide: each name carries
/// its cluster's number).
fn creates(
    api: &Api,
    ids: &Arc<Vec<String>>,
    prefix: &'static str,
    n: usize,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
       + Send
       + Sync
       + 'static {
    let (api, ids) = (api.clone(), ids.clone());
    move |i| {
        let (api, ids) = (api.clone(), ids.clone());
        Box::pin(
            async move { api.create_user(&ids[i % n], &format!("{prefix}_{:04}_{}", i % n, i / n)).await },
        )
    }
}

/// User creates, 4 at a time, spread over the fleet, until `stop`.
async fn creates_until(api: Api, ids: Arc<Vec<String>>, prefix: String, stop: Arc<AtomicBool>) -> LoadResult {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let job = move || {
        let (api, ids, prefix) = (api.clone(), ids.clone(), prefix.clone());
        let i = next.fetch_add(1, Ordering::Relaxed);
        async move {
            // Spread over the clusters: a stride coprime with their number (a prime above it).
            let j = (i * 7919) % ids.len();
            api.create_user(&ids[j], &format!("{prefix}_{j:04}_{i}")).await
        }
    };
    run_while(move || !stop.load(Ordering::Relaxed), 4, job).await
}

/// Waits until every fleet cluster has converged.
async fn settle(ctx: &Ctx, ids: &[String]) -> Result<()> {
    ctx.converged(ids, "the fleet", Duration::from_secs(300), Duration::from_millis(500)).await
}

/// Transactions a second in the metadata database over 10 s, after 12 s of quiet. A session
/// reports its counts at most once a second, and one that goes idle with counts unreported
/// reports them 10 s later (PostgreSQL's idle stats timeout): after a shorter quiet, the
/// window counted the tail of the scenario before (80 to 155 "idle" transactions a second
/// after the replicas, while the server's statement log showed pgplane sending 2 a second).
/// Autovacuum's transactions count too, and the scenario's writes make it due about a minute
/// later, near the window (one run read 4.10 against 2.20 a second: six of pgplane's tables
/// vacuumed and analyzed in one second of it, 22 transactions): the metadata database is
/// vacuumed and analyzed first, so that none is due in the window.
async fn idle_metadata_tps(ctx: &Ctx) -> Result<f64> {
    let vacuum = ctx.meta.session("pgplane").await?;
    vacuum.batch_execute("VACUUM (ANALYZE)").await?;
    drop(vacuum);
    let client = ctx.meta.session("postgres").await?;
    let sql = "SELECT (xact_commit + xact_rollback)::int8 FROM pg_catalog.pg_stat_database WHERE datname = 'pgplane'";
    tokio::time::sleep(Duration::from_secs(12)).await;
    client.execute("SELECT pg_stat_clear_snapshot()", &[]).await?;
    let before: i64 = client.query_one(sql, &[]).await?.get(0);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    client.execute("SELECT pg_stat_clear_snapshot()", &[]).await?;
    let after: i64 = client.query_one(sql, &[]).await?.get(0);
    Ok((after - before) as f64 / t.elapsed().as_secs_f64())
}

/// Samples pgplane's sessions on each server every 100 ms, keeping the peak since the last
/// [`Sampler::take`].
struct Sampler {
    peaks: Arc<Vec<AtomicI64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start(servers: &[Server]) -> Result<Self> {
        let mut sessions = Vec::new();
        for s in servers {
            sessions.push(s.session("postgres").await?);
        }
        let peaks: Arc<Vec<AtomicI64>> = Arc::new(servers.iter().map(|_| AtomicI64::new(0)).collect());
        let p = peaks.clone();
        let task = tokio::spawn(async move {
            let sql =
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name LIKE 'pgplane/%'";
            loop {
                for (i, s) in sessions.iter().enumerate() {
                    if let Ok(row) = s.query_one(sql, &[]).await {
                        p[i].fetch_max(row.get(0), Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(Self { peaks, task })
    }

    /// The peaks since the last call, per server; starts over.
    fn take(&self) -> Vec<i64> {
        self.peaks.iter().map(|p| p.swap(0, Ordering::Relaxed)).collect()
    }

    fn stop(self) {
        self.task.abort();
    }
}
