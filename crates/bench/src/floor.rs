//! The floors PostgreSQL itself sets: `psql -f` running a generated file of the same
//! statements pgplane sends (one session, one statement per round trip, autocommit), and
//! `pgbench -f` running the SELECTs a read request makes on the metadata DB. Owns the
//! generated SQL text (quoted with the reconciler's own `sql::ident` / `sql::literal`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgplane_target_server::sql::{ident, literal};
use pgplane_testkit::PgServer;
use tokio::process::Command;

use crate::stats;

/// The attributes pgplane gives a normal user (crates/reconciler plan.rs / apply.rs).
const USER_ATTRS: &str =
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1";

/// From PostgreSQL 16 pgplane also grants the primary user ADMIN OPTION on each new role.
pub const ADMIN_OPTION_VERSION_NUM: i32 = 160000;

/// `CREATE ROLE` statements (and the ADMIN OPTION grant on 16+), as pgplane sends them.
pub fn create_roles_sql(roles: &[(String, String)], primary: &str, version_num: i32) -> String {
    let mut sql = String::new();
    for (name, verifier) in roles {
        sql.push_str(&format!(
            "CREATE ROLE {} WITH {USER_ATTRS} PASSWORD {};\n",
            ident(name),
            literal(verifier)
        ));
        if version_num >= ADMIN_OPTION_VERSION_NUM {
            sql.push_str(&format!(
                "GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE;\n",
                ident(name),
                ident(primary)
            ));
        }
    }
    sql
}

/// `ALTER ROLE ... PASSWORD` statements, as a password reset sends them.
pub fn reset_roles_sql(roles: &[(String, String)]) -> String {
    roles
        .iter()
        .map(|(name, verifier)| {
            format!("ALTER ROLE {} WITH INHERIT PASSWORD {};\n", ident(name), literal(verifier))
        })
        .collect()
}

/// The statements a user deletion sends (crates/reconciler apply.rs `drop_roles`), per role:
/// stop logins, end its sessions, ask `pg_shdepend` in which databases it owns something or
/// holds a privilege, its SECURITY DEFINER routines disarmed and REASSIGN OWNED / DROP OWNED
/// there (nowhere, for the bench's fresh roles), DROP ROLE. pgplane sends these for all the
/// roles of a pass together, in one pipeline: their NOLOGINs in one message (one commit), one
/// session-ending statement for them all, then one DROP ROLE naming them all that runs only if
/// nothing depends on them (a DO block that asks `pg_shdepend` first), and the query for the
/// databases where something does (the floor keeps the per-role statements).
pub fn drop_roles_sql(names: &[String]) -> String {
    let mut sql = String::new();
    for name in names {
        let role = literal(name);
        sql.push_str(&format!("ALTER ROLE {} NOLOGIN;\n", ident(name)));
        sql.push_str(&format!(
            "SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a \
             JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid \
             WHERE r.rolname = ANY(ARRAY[{role}]::pg_catalog.name[]) AND NOT r.rolcanlogin \
             AND a.pid <> pg_catalog.pg_backend_pid();\n"
        ));
        sql.push_str(&format!(
            "SELECT coalesce(d.datname, 'postgres')::text, array_agg(DISTINCT r.rolname::text) \
             FROM pg_catalog.pg_shdepend s JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid \
             LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
             WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
             AND r.rolname = ANY(ARRAY[{role}]::pg_catalog.name[]) AND d.datallowconn IS NOT FALSE GROUP BY 1 ORDER BY 1;\n"
        ));
        sql.push_str(&format!("DROP ROLE IF EXISTS {};\n", ident(name)));
    }
    sql
}

/// Bare `DROP ROLE` statements: the least a deletion can cost.
pub fn bare_drop_roles_sql(names: &[String]) -> String {
    names.iter().map(|n| format!("DROP ROLE {};\n", ident(n))).collect()
}

/// `CREATE DATABASE ... OWNER` statements, as pgplane sends them.
pub fn create_databases_sql(names: &[String], owner: &str) -> String {
    names.iter().map(|n| format!("CREATE DATABASE {} OWNER {};\n", ident(n), ident(owner))).collect()
}

/// `DROP DATABASE ... WITH (FORCE)` statements, as pgplane sends them.
pub fn drop_databases_sql(names: &[String]) -> String {
    names.iter().map(|n| format!("DROP DATABASE IF EXISTS {} WITH (FORCE);\n", ident(n))).collect()
}

/// The psql command line (password from PGPASSWORD), for the report.
pub fn psql_command(file: &str) -> String {
    format!("psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $PORT -U postgres -d postgres -f {file}")
}

/// Runs `sql` with psql in one session; returns the wall time of the psql process.
pub async fn psql(server: &PgServer, dir: &Path, name: &str, sql: &str) -> Result<Duration> {
    let path = dir.join(name);
    tokio::fs::write(&path, sql).await?;
    let started = Instant::now();
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", &server.host])
        .args(["-p", &server.port.to_string(), "-U", &server.user])
        .args(["-d", "postgres", "-f"])
        .arg(&path)
        .env("PGPASSWORD", &server.password)
        .env("PGAPPNAME", "pgplane-bench-floor")
        .stdout(std::process::Stdio::null())
        .output()
        .await
        .context("running psql")?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("psql -f {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = tokio::fs::remove_file(&path).await;
    Ok(elapsed)
}

/// What one pgbench run measured.
#[derive(Debug, Clone, Copy)]
pub struct PgbenchResult {
    /// Transactions per second, without initial connection time (pgbench's own figure).
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The pgbench command line, for the report.
pub fn pgbench_command(script: &str, clients: usize, seconds: u64) -> String {
    format!(
        "pgbench -n -M prepared -f {script} -c {clients} -j {} -T {seconds} -l -h 127.0.0.1 -p $PORT -U postgres pgplane",
        threads(clients)
    )
}

fn threads(clients: usize) -> usize {
    clients.min(2)
}

/// Runs `script` with pgbench against `database` and reads the per-transaction log for
/// latency percentiles.
pub async fn pgbench(
    server: &PgServer,
    database: &str,
    dir: &Path,
    script: &str,
    clients: usize,
    seconds: u64,
) -> Result<PgbenchResult> {
    let script_path = dir.join("read.sql");
    tokio::fs::write(&script_path, script).await?;
    let log_dir = dir.join(format!("pgbench-{}", uuid::Uuid::new_v4()));
    tokio::fs::create_dir_all(&log_dir).await?;
    let prefix: PathBuf = log_dir.join("pgbench_log");
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&script_path)
        .args(["-c", &clients.to_string(), "-j", &threads(clients).to_string()])
        .args(["-T", &seconds.to_string(), "-l", "--log-prefix"])
        .arg(&prefix)
        .args(["-h", &server.host, "-p", &server.port.to_string()])
        .args(["-U", &server.user, database])
        .env("PGPASSWORD", &server.password)
        .env("PGAPPNAME", "pgplane-bench-pgbench")
        .output()
        .await
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    }
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    let mut latencies = Vec::new();
    let mut entries = tokio::fs::read_dir(&log_dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let text = tokio::fs::read_to_string(entry.path()).await?;
        latencies.extend(parse_pgbench_log(&text));
    }
    let _ = tokio::fs::remove_dir_all(&log_dir).await;
    let (p50_ms, p99_ms) = stats::p50_p99_ms(&mut latencies);
    Ok(PgbenchResult { tps, p50_ms, p99_ms })
}

/// What `pgbench -C` (a new connection, so a new login, for every transaction) measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginLoad {
    /// Transactions done, each after its own login.
    pub transactions: u64,
    /// Clients that stopped because a login (or its transaction) failed.
    pub failed_clients: u64,
    /// Transactions (so logins) per second.
    pub tps: f64,
}

/// The `pgbench -C` command line, for the report.
pub fn pgbench_logins_command(clients: usize, seconds: u64) -> String {
    format!(
        "pgbench -n -C -f select1.sql -c {clients} -j {} -T {seconds} -h 127.0.0.1 -p $PORT -U <user> defaultdb",
        threads(clients)
    )
}

/// Runs `SELECT 1` transactions with `pgbench -C` as `user` (a login per transaction) for
/// `seconds`. A failed login stops its client (pgbench's behaviour): counted, not an error.
pub async fn pgbench_logins(
    server: &PgServer,
    (user, password, database): (&str, &str, &str),
    dir: &Path,
    clients: usize,
    seconds: u64,
) -> Result<LoginLoad> {
    let script_path = dir.join("select1.sql");
    tokio::fs::write(&script_path, "SELECT 1;\n").await?;
    let out = Command::new("pgbench")
        .args(["-n", "-C", "-f"])
        .arg(&script_path)
        .args(["-c", &clients.to_string(), "-j", &threads(clients).to_string()])
        .args(["-T", &seconds.to_string()])
        .args(["-h", &server.host, "-p", &server.port.to_string()])
        .args(["-U", user, database])
        .env("PGPASSWORD", password)
        .env("PGAPPNAME", "pgplane-bench-logins")
        .output()
        .await
        .context("running pgbench -C")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let number = |prefix: &str| -> Option<f64> {
        let line = stdout.lines().find(|l| l.starts_with(prefix))?;
        line[prefix.len()..].trim().split(|c: char| c.is_whitespace() || c == '/').next()?.parse().ok()
    };
    let transactions = number("number of transactions actually processed:")
        .with_context(|| format!("no transaction count in pgbench's output: {stdout}{stderr}"))?;
    let failed_clients = stderr.lines().filter(|l| l.contains("aborted")).count() as u64;
    Ok(LoginLoad { transactions: transactions as u64, failed_clients, tps: number("tps = ").unwrap_or(0.0) })
}

/// Transaction latencies from pgbench's `-l` log: `client_id transaction_no time script_no
/// time_epoch time_us`, the third field in microseconds.
fn parse_pgbench_log(text: &str) -> Vec<Duration> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|v| v.parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_statements_match_what_pgplane_sends() {
        let roles = vec![("a\"b".to_string(), "SCRAM-SHA-256$4096:x$y:z".to_string())];
        let sql = create_roles_sql(&roles, "doadmin", 170004);
        assert!(sql.starts_with("CREATE ROLE \"a\"\"b\" WITH LOGIN NOSUPERUSER"));
        assert!(sql.contains("PASSWORD 'SCRAM-SHA-256$4096:x$y:z';\n"));
        assert!(sql.contains("GRANT \"a\"\"b\" TO \"doadmin\" WITH ADMIN TRUE"));
        assert!(!create_roles_sql(&roles, "doadmin", 150010).contains("GRANT"));
        assert!(reset_roles_sql(&roles).starts_with("ALTER ROLE \"a\"\"b\" WITH INHERIT PASSWORD"));
        let drop = drop_roles_sql(&["r".into()]);
        assert!(drop.starts_with("ALTER ROLE \"r\" NOLOGIN;"));
        assert!(drop.contains("pg_shdepend"));
        assert!(drop.trim_end().ends_with("DROP ROLE IF EXISTS \"r\";"));
    }

    #[test]
    fn pgbench_log_lines_give_latencies() {
        let log = "0 1 1520 0 1700000000 123456\n1 1 980 0 1700000000 123999\n";
        assert_eq!(parse_pgbench_log(log), vec![Duration::from_micros(1520), Duration::from_micros(980)]);
    }
}
