//! The PostgreSQL servers the bench runs against: containers of the locally built
//! `pgplane-pg:<major>` test images, started through testcontainers like the testkit's (host
//! networking, each on its own free loopback port), but with the bench's settings: no
//! statement logging by default (it is switched on with ALTER SYSTEM only while the drift
//! pass is measured, so it must not be set on the command line, which would override that),
//! a log line prefix that names the client application (so statements can be counted per
//! client), and room for pgbench's 64 connections. A watcher process removes them when the
//! bench exits, however it exits; they carry the `pgplane.test=bench` label that
//! `make clean-test-containers` also removes.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use pgplane_testkit::{free_port, unique_suffix, PgServer};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio_postgres::{Client, NoTls};

/// The application name of the bench's own sessions (markers, polling), kept apart from
/// pgplane's (`pgplane`) when statements are counted.
pub const BENCH_APP: &str = "pgplane-bench";

/// A running container and the server in it.
pub struct Server {
    pub pg: PgServer,
    pub role: String,
    container: ContainerAsync<GenericImage>,
}

impl Server {
    /// A session on `database` as the superuser, named [`BENCH_APP`].
    pub async fn session(&self, database: &str) -> Result<Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(&self.pg.host)
            .port(self.pg.port)
            .user(&self.pg.user)
            .password(&self.pg.password)
            .dbname(database)
            .application_name(BENCH_APP)
            .connect_timeout(Duration::from_secs(10))
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to the {} server", self.role))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.pg.log()
    }

    pub async fn remove(self) {
        let _ = self.container.rm().await;
    }
}

/// Starts one server of PostgreSQL `major`; `role` labels it (metadata, target, scale-3, ...).
/// A failed start (a port taken between its choice and the server's bind, a stalled engine)
/// is tried again on another port, as the testkit does.
pub async fn start(major: u32, role: &str) -> Result<Server> {
    let mut failures = Vec::new();
    for _ in 0..pgplane_testkit::START_ATTEMPTS {
        match try_start(major, role).await {
            Ok(server) => return Ok(server),
            Err(e) => failures.push(e),
        }
    }
    Err(anyhow!(
        "cannot start a pgplane-pg:{major} container ({}); build the images with \
         deploy/images/build.sh and start dockerd",
        failures.join("; ")
    ))
}

async fn try_start(major: u32, role: &str) -> std::result::Result<Server, String> {
    let port = free_port();
    let password = format!("bench-{}", unique_suffix());
    let attempt = unique_suffix();
    let container = GenericImage::new("pgplane-pg".to_string(), major.to_string())
        .with_wait_for(WaitFor::message_on_stderr("database system is ready to accept connections"))
        .with_network("host")
        .with_env_var("PGPORT", port.to_string())
        .with_env_var("POSTGRES_PASSWORD", &password)
        .with_label("pgplane.test", "bench")
        .with_label("pgplane.bench.role", role)
        .with_label("pgplane.test.attempt", &attempt)
        .with_cmd(["-c", "max_connections=300", "-c", "log_line_prefix=%m [%p] %a: "])
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .await
        .map_err(|e| format!("{e}{}", pgplane_testkit::remove_attempt(&attempt)))?;
    let pg = PgServer {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password,
        container_id: Some(container.id().to_string()),
    };
    Ok(Server { pg, role: role.to_string(), container })
}

/// Starts several servers at once.
pub async fn start_all(major: u32, roles: &[String]) -> Result<Vec<Server>> {
    let servers = futures::future::try_join_all(roles.iter().map(|role| start(major, role))).await?;
    let ids: Vec<String> = servers.iter().filter_map(|s| s.pg.container_id.clone()).collect();
    pgplane_testkit::remove_at_exit(&ids);
    Ok(servers)
}

/// Switches statement logging on a server on or off (ALTER SYSTEM and a reload: sessions
/// take it up at their next statement).
pub async fn set_statement_logging(server: &Server, on: bool) -> Result<()> {
    let value = if on { "all" } else { "none" };
    let client = server.session("postgres").await?;
    // ALTER SYSTEM cannot run in a transaction block, nor in a multi-statement string.
    client.batch_execute(&format!("ALTER SYSTEM SET log_statement = '{value}'")).await?;
    client.batch_execute("SELECT pg_reload_conf()").await?;
    Ok(())
}

/// Writes a marker statement into a server's log (statement logging must be on).
pub async fn mark(server: &Server, marker: &str) -> Result<()> {
    let client = server.session("postgres").await?;
    client.batch_execute(&format!("SELECT 'pgplane-bench-mark {marker}'")).await?;
    Ok(())
}

/// Statements logged by the application `app` (or `app/<process>`: pgplane names its sessions
/// `pgplane/<id>`) between two markers of a server's log, split by whether their text contains
/// `pattern`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementCount {
    pub total: usize,
    pub matching: usize,
}

pub fn count_statements(
    log: &str,
    begin: &str,
    end: &str,
    app: &str,
    pattern: &str,
) -> Result<StatementCount> {
    let begin = format!("pgplane-bench-mark {begin}'");
    let end = format!("pgplane-bench-mark {end}'");
    let from = log.find(&begin).ok_or_else(|| anyhow!("marker {begin} not in the log"))?;
    let to =
        log[from..].find(&end).map(|i| from + i).ok_or_else(|| anyhow!("marker {end} not in the log"))?;
    const LOG: &str = ": LOG:  ";
    let mut count = StatementCount::default();
    for line in log[from..to].lines() {
        let Some(at) = line.find(LOG) else { continue };
        let name = line[..at].rsplit(' ').next().unwrap_or_default();
        if !(name == app || name.strip_prefix(app).is_some_and(|id| id.starts_with('/'))) {
            continue;
        }
        let rest = &line[at + LOG.len()..];
        if rest.starts_with("statement: ") || rest.starts_with("execute ") {
            count.total += 1;
            if rest.contains(pattern) {
                count.matching += 1;
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_counted_between_markers_per_application() {
        let log = "\
2026-01-01 00:00:00.000 UTC [1] pgplane: LOG:  execute s0: SELECT before
2026-01-01 00:00:00.001 UTC [2] pgplane-bench: LOG:  statement: SELECT 'pgplane-bench-mark a'
2026-01-01 00:00:00.002 UTC [1] pgplane: LOG:  execute s1: SELECT 1
2026-01-01 00:00:00.003 UTC [1] pgplane/0123456789ab: LOG:  statement: BEGIN
\tcontinued line
2026-01-01 00:00:00.004 UTC [3] pgplane/ba9876543210: LOG:  execute sqlx_s_1: select cluster_id from clusters
2026-01-01 00:00:00.005 UTC [2] pgplane-bench: LOG:  statement: SELECT 2
2026-01-01 00:00:00.006 UTC [2] pgplane-bench: LOG:  statement: SELECT 'pgplane-bench-mark b'
2026-01-01 00:00:00.007 UTC [1] pgplane: LOG:  execute s2: SELECT after
";
        let c = count_statements(log, "a", "b", "pgplane", "from clusters").unwrap();
        assert_eq!((c.total, c.matching), (3, 1));
        assert!(count_statements(log, "a", "zz", "pgplane", "x").is_err());
    }
}
