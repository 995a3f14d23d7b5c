//! Scenario 9, connection pools: pgbench through a pool pgplane manages (`pgplane pooler`
//! beside the target, running PgBouncer) against pgbench through a PgBouncer configured by hand
//! with the same settings and logins, in alternating rounds; and the time from a pool's
//! creation (the API's answer) to the first login through it, for a cluster's first pool
//! (PgBouncer started) and for further pools (PgBouncer reloaded).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

use crate::ctx::Ctx;

/// Server connections of the pool (its `size`), and pgbench's clients through it.
pub const POOL_SIZE: i32 = 10;
pub const POOL_CLIENTS: usize = 16;
/// Further pools whose first login is timed.
const FURTHER_POOLS: usize = 5;
/// The pool pgbench runs through, managed and by hand.
const POOL: &str = "bench-pool";

#[derive(Debug, Clone, Default)]
pub struct PoolsResult {
    pub seconds: u64,
    /// pgbench's tps through the managed pool and through the hand-configured PgBouncer, one
    /// figure per round.
    pub managed_tps: Vec<f64>,
    pub hand_tps: Vec<f64>,
    /// From the API's answer to the first login through the pool: the cluster's first pool,
    /// then further pools.
    pub first_pool_ms: f64,
    pub further_pool_ms: Vec<f64>,
    pub pgbouncer: String,
}

pub async fn run(ctx: &Ctx) -> Result<PoolsResult> {
    let target = &ctx.target.pg;
    let port = pgplane_testkit::free_port();
    let pooler = ctx.pgplane.pooler(&format!("{}:{}", target.host, target.port), port)?;
    let measured = measure(ctx, port).await;
    pooler.stop().await?;
    measured
}

/// The scenario, with the pooler serving pools on `port`.
async fn measure(ctx: &Ctx, port: u16) -> Result<PoolsResult> {
    let target = &ctx.target.pg;
    let cluster = ctx.pgplane.api.get_json(&ctx.cluster_path("")).await?;
    let password = cluster["database"]["connection"]["password"].as_str().context("the primary password")?;
    let database = cluster["database"]["pgplane"]["default_database"].as_str().context("default database")?;
    let user = ctx.primary_user.as_str();
    let login = Login { user, password };

    // pgbench's tables, in the default database, as the primary user.
    let init = Command::new("pgbench")
        .args([
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            &target.host,
            "-p",
            &target.port.to_string(),
            "-U",
            user,
            database,
        ])
        .env("PGPASSWORD", password)
        .output()
        .await
        .context("running pgbench -i")?;
    if !init.status.success() {
        bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    }

    let first_pool_ms = first_login(ctx, POOL, database, port, &login).await?;
    let mut further_pool_ms = Vec::new();
    for i in 0..FURTHER_POOLS {
        let name = format!("bench-further-{i}");
        further_pool_ms.push(first_login(ctx, &name, database, port, &login).await?);
        ctx.pgplane.api.delete(&ctx.cluster_path(&format!("/pools/{name}"))).await?;
    }

    let verifier: String = ctx
        .target
        .session("postgres")
        .await?
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&user])
        .await?
        .get(0);
    let hand =
        HandBouncer::start(&ctx.work_dir.join("hand-bouncer"), target, database, user, &verifier).await?;
    let seconds = ctx.config.pool_seconds;
    let (mut managed_tps, mut hand_tps) = (Vec::new(), Vec::new());
    for round in 0..ctx.config.pool_rounds {
        // Alternating which goes first, so that neither always runs on a warmer machine.
        for managed in if round % 2 == 0 { [true, false] } else { [false, true] } {
            let (port, into) = if managed { (port, &mut managed_tps) } else { (hand.port, &mut hand_tps) };
            into.push(pgbench_select(port, &login, seconds).await?);
        }
    }
    let version = crate::command_output("pgbouncer", &["--version"]).await;
    let pgbouncer = version.lines().next().unwrap_or_default().to_string();
    Ok(PoolsResult { seconds, managed_tps, hand_tps, first_pool_ms, further_pool_ms, pgbouncer })
}

struct Login<'a> {
    user: &'a str,
    password: &'a str,
}

/// Creates a pool and times, from the API's answer, how long until a login through it
/// succeeds (in ms). The attempts refused while the pooler has not registered are not timed.
async fn first_login(ctx: &Ctx, name: &str, database: &str, port: u16, login: &Login<'_>) -> Result<f64> {
    let body = json!({"name": name, "mode": "transaction", "size": POOL_SIZE, "db": database});
    let waiting = Instant::now();
    let answered = loop {
        let (status, answer) = ctx.pgplane.api.post_json(&ctx.cluster_path("/pools"), body.clone()).await?;
        let answered = Instant::now();
        if status == 201 {
            break answered;
        }
        let no_pooler = answer["message"].as_str().is_some_and(|m| m.contains("no pooler"));
        if !(status == 422 && no_pooler) || waiting.elapsed() > Duration::from_secs(60) {
            bail!("creating the pool {name}: {status} {answer}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        let attempt = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user(login.user)
            .password(login.password)
            .dbname(name)
            .connect(NoTls)
            .await;
        match attempt {
            Ok((client, connection)) => {
                let elapsed = answered.elapsed();
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await?;
                return Ok(elapsed.as_secs_f64() * 1000.0);
            }
            Err(e) if answered.elapsed() > Duration::from_secs(60) => bail!("no login through {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// `pgbench -S` (its built-in select-only script, simple protocol as transaction pooling
/// needs) through a PgBouncer; returns tps.
async fn pgbench_select(port: u16, login: &Login<'_>, seconds: u64) -> Result<f64> {
    let out = Command::new("pgbench")
        .args(["-n", "-S", "-c", &POOL_CLIENTS.to_string(), "-j", "2", "-T", &seconds.to_string()])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", login.user, POOL])
        .env("PGPASSWORD", login.password)
        .output()
        .await
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench through port {port} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))
}

/// The command line of a pgbench round, for the report.
pub fn pgbench_command(seconds: u64) -> String {
    format!("pgbench -n -S -c {POOL_CLIENTS} -j 2 -T {seconds} -h 127.0.0.1 -p $POOL_PORT -U doadmin {POOL}")
}

/// A PgBouncer configured by hand as an operator would for the same pool: the same pool
/// settings, SCRAM with the user's verifier, no pgplane involved.
struct HandBouncer {
    port: u16,
    _child: Child,
    dir: PathBuf,
}

impl HandBouncer {
    async fn start(
        dir: &Path,
        target: &pgplane_testkit::PgServer,
        database: &str,
        user: &str,
        verifier: &str,
    ) -> Result<Self> {
        let port = pgplane_testkit::free_port();
        tokio::fs::create_dir_all(dir).await?;
        let d = dir.display();
        let ini = format!(
            "[databases]\n{POOL} = host={} port={} dbname={database} pool_size={POOL_SIZE} \
             max_db_connections={POOL_SIZE} pool_mode=transaction\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir = {d}\nauth_type = scram-sha-256\nauth_file = {d}/users.txt\n\
             pidfile = {d}/pgbouncer.pid\nmax_client_conn = 1000\nignore_startup_parameters = extra_float_digits\n\
             log_connections = 0\nlog_disconnections = 0\n",
            target.host, target.port
        );
        tokio::fs::write(dir.join("pgbouncer.ini"), ini).await?;
        tokio::fs::write(dir.join("users.txt"), format!("\"{user}\" \"{verifier}\"\n")).await?;
        let mut command = Command::new("pgbouncer");
        // PgBouncer refuses to run as root: as postgres then, which must read its files.
        if running_as_root() {
            let chown = Command::new("chown").args(["-R", "postgres"]).arg(dir).status().await?;
            anyhow::ensure!(chown.success(), "chown of {d} failed");
            command.args(["-u", "postgres"]);
        }
        let log = std::fs::File::create(dir.join("pgbouncer.log"))?;
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the hand-configured pgbouncer")?;
        let me = Self { port, _child: child, dir: dir.to_path_buf() };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(me);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the hand-configured pgbouncer did not listen; see {}/pgbouncer.log", me.dir.display())
    }
}

/// Whether the bench runs as root (its /proc entry belongs to uid 0).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}
