//! `pgplane-bench`: measures pgplane side by side with the floor PostgreSQL itself sets and
//! writes BENCHMARKS.md. Owns the command line and the order of the bench: start the
//! PostgreSQL containers (metadata, main target, scale targets), start the release
//! `pgplane serve` as its own process, register the main cluster, then for each run: users
//! (create, reset), reads while the users exist, users (delete), databases, floods of wrong
//! secrets; then the scale, replicas, fleet, credentials and pools scenarios; then the report. See BENCHMARKS.md for what each scenario measures.

mod api;
mod containers;
mod cpu;
mod ctx;
mod floor;
mod load;
mod pgplane;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::containers::Server;
use crate::ctx::{Config, Ctx};
use crate::pgplane::{registration, Pgplane};
use crate::report::{Environment, MemoryReport, Results};

/// Benchmarks pgplane against the floor PostgreSQL sets (psql, pgbench) and writes
/// BENCHMARKS.md. Needs Docker with the pgplane-pg images, psql and pgbench.
#[derive(Parser, Debug)]
#[command(name = "pgplane-bench", version)]
struct Args {
    /// Runs of scenarios 1–3 and 5 (each figure is the median of the runs, with min and
    /// max); 0 skips scenarios 1–3 and 5.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Users created, reset and deleted per run.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// API requests in flight for users (and for adding users in scenario 4).
    #[arg(long, default_value_t = 16)]
    user_concurrency: usize,
    /// Databases created and dropped per run.
    #[arg(long, default_value_t = 50)]
    databases: usize,
    /// API requests in flight for databases.
    #[arg(long, default_value_t = 16)]
    db_concurrency: usize,
    /// Seconds each read measurement runs.
    #[arg(long, default_value_t = 5)]
    read_seconds: u64,
    /// Read concurrencies.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    read_concurrency: Vec<usize>,
    /// Extra targets for scenario 4 (one cluster each); 0 skips scenario 4.
    #[arg(long, default_value_t = 20)]
    scale_targets: usize,
    /// Numbers of clusters a drift round covers in scenario 4.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20")]
    scale_clusters: Vec<usize>,
    /// Users per scale cluster at each step of scenario 4.
    #[arg(long, value_delimiter = ',', default_value = "100,300")]
    scale_users: Vec<usize>,
    /// Drift rounds measured per configuration.
    #[arg(long, default_value_t = 3)]
    scale_repeats: usize,
    /// Requests a second of the wrong-secret floods in scenario 5.
    #[arg(long, default_value_t = 400)]
    flood_rate: usize,
    /// Client addresses (127.0.0.2 and up) the floods come from.
    #[arg(long, default_value_t = 32)]
    flood_addresses: usize,
    /// Users created per run through one process and through three in scenario 6 (0 skips
    /// scenario 6).
    #[arg(long, default_value_t = 500)]
    replica_users: usize,
    /// Rounds of scenario 6 through one process, then through three (each figure is the median
    /// of the rounds: a round takes seconds, and its ratio spreads more than the others').
    #[arg(long, default_value_t = 5)]
    replica_rounds: usize,
    /// SIGKILLs of the process working on a cluster in scenario 6.
    #[arg(long, default_value_t = 5)]
    replica_kills: usize,
    /// PostgreSQL servers of the fleet in scenario 7.
    #[arg(long, default_value_t = 4)]
    fleet_servers: usize,
    /// Clusters of the fleet, spread over its servers (0 skips scenario 7). The whole fleet is
    /// 10000; each cluster's default database takes about 7.5 MB of disk on its server.
    #[arg(long, default_value_t = 1000)]
    fleet_clusters: usize,
    /// Users per fleet cluster besides its primary user.
    #[arg(long, default_value_t = 3)]
    fleet_users: usize,
    /// User creates measured on the idle fleet (and compared with those during drift rounds).
    #[arg(long, default_value_t = 200)]
    fleet_probe_creates: usize,
    /// Seconds of the rotation's grace in scenario 8, under a login load (0 skips it).
    #[arg(long, default_value_t = 20)]
    rotation_grace: u64,
    /// Leases expired together and reaped in scenario 8 (0 skips them).
    #[arg(long, default_value_t = 1000)]
    leases: usize,
    /// Seconds of each pgbench round through a pool in scenario 9 (0 skips scenario 9).
    #[arg(long, default_value_t = 10)]
    pool_seconds: u64,
    /// Rounds of scenario 9 (each: pgbench through the managed pool and the hand-configured one).
    #[arg(long, default_value_t = 3)]
    pool_rounds: usize,
    /// PostgreSQL major version of the targets and the metadata DB (15 or 17).
    #[arg(long = "pg", default_value_t = 17)]
    pg_major: u32,
    /// The pgplane binary (default: `pgplane` next to this binary).
    #[arg(long)]
    pgplane_bin: Option<PathBuf>,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Hand-written findings included in the report.
    #[arg(long, default_value = "crates/bench/FINDINGS.md")]
    findings: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let bin = match &args.pgplane_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.parent().context("the bench binary's directory")?.join("pgplane"),
    };
    if !bin.exists() {
        bail!("no pgplane binary at {} (build it: cargo build --release -p pgplane)", bin.display());
    }
    for tool in ["psql", "pgbench", "docker"] {
        which(tool).await?;
    }
    if args.pool_seconds > 0 {
        which("pgbouncer").await?;
    }
    let config = Config {
        runs: args.runs,
        users: args.users,
        user_concurrency: args.user_concurrency,
        databases: args.databases,
        db_concurrency: args.db_concurrency,
        read_seconds: args.read_seconds,
        read_concurrency: args.read_concurrency.clone(),
        scale_targets: args.scale_targets,
        scale_clusters: args.scale_clusters.clone(),
        scale_users: args.scale_users.clone(),
        scale_repeats: args.scale_repeats.max(1),
        flood_rate: args.flood_rate.max(1),
        flood_addresses: args.flood_addresses.clamp(1, 250),
        replica_users: args.replica_users,
        replica_rounds: args.replica_rounds,
        replica_kills: args.replica_kills,
        fleet_servers: if args.fleet_clusters == 0 { 0 } else { args.fleet_servers.max(1) },
        fleet_clusters: args.fleet_clusters,
        fleet_users: args.fleet_users,
        fleet_probe_creates: args.fleet_probe_creates.max(1),
        rotation_grace_secs: args.rotation_grace,
        leases: args.leases,
        pool_seconds: args.pool_seconds,
        pool_rounds: args.pool_rounds.max(1),
        pg_major: args.pg_major,
    };
    let mut env = Environment {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        load_start: loadavg(),
        ..environment().await
    };
    let work_dir = std::env::temp_dir().join(format!("pgplane-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;

    step(&format!(
        "starting PostgreSQL {} containers: metadata, target, {} scale targets, {} fleet servers",
        config.pg_major, config.scale_targets, config.fleet_servers
    ));
    let mut roles = vec!["metadata".to_string(), "target".to_string()];
    roles.extend((1..=config.scale_targets).map(|i| format!("scale-{i}")));
    roles.extend((1..=config.fleet_servers).map(|i| format!("fleet-{i}")));
    let mut servers = containers::start_all(config.pg_major, &roles).await?;
    let mut scale_servers: Vec<Server> = servers.split_off(2);
    let fleet_servers: Vec<Server> = scale_servers.split_off(config.scale_targets);
    let target = servers.pop().expect("target");
    let meta = servers.pop().expect("metadata");
    // pgplane runs with least privilege on its metadata DB, as deploy/metadata-role.sql sets up.
    let meta_password = format!("meta-{}", pgplane_testkit::unique_suffix());
    let admin = meta.session("postgres").await?;
    admin
        .batch_execute(&format!(
            "CREATE ROLE pgplane LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             PASSWORD '{meta_password}'"
        ))
        .await?;
    admin.batch_execute("CREATE DATABASE pgplane OWNER pgplane").await?;
    meta.session("pgplane").await?.batch_execute("REVOKE ALL ON DATABASE pgplane FROM public").await?;
    env.metadata_version = server_version(&meta).await?.1;
    let (target_version_num, target_version) = server_version(&target).await?;
    env.target_version = target_version;

    step("starting pgplane serve");
    let database_url =
        format!("postgres://pgplane:{meta_password}@{}:{}/pgplane", meta.pg.host, meta.pg.port);
    let pgplane = Pgplane::start(pgplane::Options {
        bin: bin.clone(),
        database_url: database_url.clone(),
        work_dir: work_dir.clone(),
        resync_interval_s: 3600,
    })
    .await?;
    env.pgplane_command = pgplane.command.clone();
    let cluster_id = pgplane.api.register(registration("bench-main", &target.pg)).await?;
    let (meta_pid, target_pid) = (postmaster(&meta)?, postmaster(&target)?);
    let ctx = Ctx {
        config: config.clone(),
        pgplane,
        meta,
        target,
        meta_pid,
        target_pid,
        cluster_id,
        target_version_num,
        primary_user: "doadmin".into(),
        work_dir: work_dir.clone(),
    };
    let outcome = run_all(&ctx, &scale_servers, &fleet_servers).await;
    // Clean up whatever happened.
    let Ctx { pgplane, meta, target, .. } = ctx;
    let end_kib = pgplane.memory().map(|m| m.rss_kib).unwrap_or(0);
    let log_copy = pgplane.log_path.clone();
    if let Err(e) = pgplane.stop().await {
        eprintln!("warning: {e}");
    }
    for s in scale_servers.into_iter().chain(fleet_servers).chain([meta, target]) {
        s.remove().await;
    }
    let (users, reads, databases, floods, scale, replicas, fleet, credentials, pools, mut memory) =
        match outcome {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pgplane's log: {}", log_copy.display());
                return Err(e);
            }
        };
    memory.end_kib = end_kib;
    env.load_end = loadavg();
    env.total_secs = started.elapsed().as_secs_f64();
    let findings = std::fs::read_to_string(&args.findings).ok();
    let text = report::render(&Results {
        config: &config,
        env: &env,
        users: &users,
        reads: &reads,
        databases: &databases,
        floods: &floods,
        scale: &scale,
        replicas: &replicas,
        fleet: &fleet,
        credentials: &credentials,
        pools: &pools,
        memory: &memory,
        findings,
    });
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    let _ = std::fs::remove_dir_all(&work_dir);
    step(&format!("wrote {} in {:.1} min", args.out.display(), env.total_secs / 60.0));
    Ok(())
}

type AllResults = (
    Vec<scenarios::users::UsersRun>,
    Vec<scenarios::reads::ReadsRun>,
    Vec<scenarios::databases::DatabasesRun>,
    Vec<scenarios::floods::FloodsRun>,
    scenarios::scale::ScaleResult,
    scenarios::replicas::ReplicasResult,
    scenarios::fleet::FleetResult,
    scenarios::credentials::CredentialsResult,
    Option<scenarios::pools::PoolsResult>,
    MemoryReport,
);

async fn run_all(ctx: &Ctx, scale_servers: &[Server], fleet_servers: &[Server]) -> Result<AllResults> {
    let mut memory = MemoryReport::default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = ctx.pgplane.memory()?;
    memory.idle_start_kib = m.rss_kib;
    memory.overall_peak_kib = m.hwm_kib;
    memory.peak_reset_works = ctx.pgplane.reset_peak();

    let mut users = Vec::new();
    let mut reads = Vec::new();
    let mut databases = Vec::new();
    let mut floods = Vec::new();
    for run in 1..=ctx.config.runs {
        step(&format!("run {run}: users (create, reset)"));
        let mut u = scenarios::users::create_and_reset(ctx, run).await?;
        memory.overall_peak_kib = memory.overall_peak_kib.max(ctx.pgplane.memory()?.hwm_kib);
        // `--read-seconds 0` leaves the reads out (their floor reads the current schema: a
        // binary from before a migration cannot be measured there).
        if ctx.config.read_seconds > 0 {
            step(&format!("run {run}: reads"));
            let r = scenarios::reads::run(ctx).await?;
            memory.reads_peak_kib.push(r.peak_kib);
            memory.overall_peak_kib = memory.overall_peak_kib.max(r.peak_kib);
            reads.push(r);
        }
        if run == 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            memory.idle_loaded_kib = ctx.pgplane.memory()?.rss_kib;
        }
        step(&format!("run {run}: users (delete)"));
        scenarios::users::delete(ctx, run, &mut u).await?;
        users.push(u);
        step(&format!("run {run}: databases"));
        databases.push(scenarios::databases::run(ctx, run).await?);
        memory.overall_peak_kib = memory.overall_peak_kib.max(ctx.pgplane.memory()?.hwm_kib);
        step(&format!("run {run}: floods of wrong secrets"));
        floods.push(scenarios::floods::run(ctx).await?);
        memory.overall_peak_kib = memory.overall_peak_kib.max(ctx.pgplane.memory()?.hwm_kib);
        step(&format!(
            "run {run} done: users create {:.1}s (floor {:.1}s), reset {:.1}s ({:.1}s), delete {:.1}s ({:.1}s)",
            users[run - 1].create.secs,
            users[run - 1].floor.create,
            users[run - 1].reset.secs,
            users[run - 1].floor.reset,
            users[run - 1].delete.secs,
            users[run - 1].floor.delete
        ));
    }
    let scale = if scale_servers.is_empty() {
        scenarios::scale::ScaleResult::default()
    } else {
        step("scale: registering targets, adding users, measuring drift rounds");
        scenarios::scale::run(ctx, scale_servers).await?
    };
    memory.scale_peak_kib = scale.peak_kib;
    memory.overall_peak_kib = memory.overall_peak_kib.max(scale.peak_kib);
    let replicas = if ctx.config.replica_users == 0 {
        scenarios::replicas::ReplicasResult::default()
    } else {
        step("replicas: users through three processes and through one; SIGKILL takeovers");
        scenarios::replicas::run(ctx).await?
    };
    memory.overall_peak_kib = memory.overall_peak_kib.max(ctx.pgplane.memory()?.hwm_kib);
    let fleet = if fleet_servers.is_empty() {
        scenarios::fleet::FleetResult::default()
    } else {
        step(&format!(
            "fleet: {} clusters on {} servers, drift rounds, idle load",
            ctx.config.fleet_clusters,
            fleet_servers.len()
        ));
        scenarios::fleet::run(ctx, fleet_servers).await?
    };
    step("credentials: a rotation under a login load, leases expired together and reaped");
    let credentials = scenarios::credentials::run(ctx).await?;
    memory.overall_peak_kib = memory.overall_peak_kib.max(ctx.pgplane.memory()?.hwm_kib);
    let pools = if ctx.config.pool_seconds == 0 {
        None
    } else {
        step("pools: pgbench through a managed pool and a hand-configured PgBouncer; time to first login");
        Some(scenarios::pools::run(ctx).await?)
    };
    Ok((users, reads, databases, floods, scale, replicas, fleet, credentials, pools, memory))
}

fn step(message: &str) {
    eprintln!("[pgplane-bench {}] {message}", chrono::Local::now().format("%H:%M:%S"));
}

async fn which(tool: &str) -> Result<()> {
    let found = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .await?
        .status
        .success();
    if !found {
        bail!("{tool} is not installed; the bench needs psql, pgbench, docker and pgbouncer");
    }
    Ok(())
}

/// What a command printed on its standard output (empty when it could not run).
pub(crate) async fn command_output(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program).args(args).output().await {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(_) => String::new(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn environment() -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]).await;
    let dirty = !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).await.is_empty();
    Environment {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |c| c.get()),
        memory_gib: memory_kib / 1048576.0,
        kernel: command_output("uname", &["-r"]).await,
        psql: command_output("psql", &["--version"]).await,
        pgbench: command_output("pgbench", &["--version"]).await,
        commit: if dirty { format!("{commit} (with uncommitted changes)") } else { commit },
        ..Environment::default()
    }
}

/// The process ID of a server's postmaster (its container's first process).
fn postmaster(server: &Server) -> Result<u32> {
    let id = server.pg.container_id.as_deref().context("the bench's servers run in containers")?;
    cpu::container_pid(id)
}

async fn server_version(server: &Server) -> Result<(i32, String)> {
    let row = server
        .session("postgres")
        .await?
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version')",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
