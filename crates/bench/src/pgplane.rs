//! The pgplane under test, run as production runs it: the release `pgplane` binary as a
//! separate process (`pgplane serve`), with a sealing key from `pgplane secret-key generate`
//! and a token from `pgplane token create`. Owns reading its memory from /proc (VmRSS,
//! VmHWM, and resetting the high-water mark through clear_refs) and reading the reconciler's
//! "reconcile pass finished" events from its JSON log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::api::Api;

/// A running `pgplane serve`.
pub struct Pgplane {
    child: Child,
    pub pid: u32,
    pub api: Api,
    pub log_path: PathBuf,
    /// The command line it was started with (secrets elided), for the report.
    pub command: String,
    /// What started it, for starting replicas of it (same metadata DB, key and token).
    options: Options,
    key: String,
    token: String,
}

/// Options of the process under test.
#[derive(Clone)]
pub struct Options {
    pub bin: PathBuf,
    pub database_url: String,
    pub work_dir: PathBuf,
    pub resync_interval_s: u64,
}

async fn output(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} {} failed: {}", bin.display(), args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Pgplane {
    /// Makes a key and a token, starts `pgplane serve` on a free loopback port and waits until
    /// it is ready.
    pub async fn start(options: Options) -> Result<Self> {
        let bin = &options.bin;
        let key = output(bin, &["secret-key", "generate"], &[]).await?;
        let db_env = [("PGPLANE_DATABASE_URL", options.database_url.as_str())];
        let token = output(bin, &["token", "create", "--name", "bench"], &db_env).await?;
        Self::spawn(options, key, token, "pgplane").await
    }

    /// Another `pgplane serve` on the same metadata DB, with the same key and token, logging
    /// to `<name>.log`.
    pub async fn replica(&self, name: &str) -> Result<Self> {
        Self::spawn(self.options.clone(), self.key.clone(), self.token.clone(), name).await
    }

    async fn spawn(options: Options, key: String, token: String, name: &str) -> Result<Self> {
        let bin = &options.bin;
        let port = pgplane_testkit::free_port();
        let listen = format!("127.0.0.1:{port}");
        let resync = options.resync_interval_s.to_string();
        let log_filter = "info,sqlx=warn,pgplane_reconciler=debug";
        let args = [
            "serve",
            "--listen",
            &listen,
            "--resync-interval",
            &resync,
            "--log-format",
            "json",
            "--log",
            log_filter,
            // The bench measures capacity, not the per-token quota.
            "--rate-limit-per-minute",
            "0",
            // The fleet scenario registers a thousand clusters.
            "--registration-probes-per-minute",
            "0",
        ];
        let log_path = options.work_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).context("creating the pgplane log")?;
        let child = Command::new(bin)
            .args(args)
            .env("PGPLANE_DATABASE_URL", &options.database_url)
            .env("PGPLANE_SECRET_KEY", &key)
            .stdin(Stdio::null())
            // Logs go to standard output; standard error carries only start-up failures.
            .stdout(Stdio::from(log.try_clone().context("sharing the pgplane log")?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting pgplane serve")?;
        let pid = child.id().context("pgplane has a pid")?;
        let api = Api::new(format!("http://{listen}"), token.clone());
        let command = format!(
            "PGPLANE_DATABASE_URL=postgres://…/pgplane PGPLANE_SECRET_KEY=… pgplane {}",
            args.join(" ")
        );
        let mut me = Self { child, pid, api, log_path, command, options, key, token };
        me.wait_ready().await?;
        Ok(me)
    }

    /// `pgplane pooler` beside `server` (HOST:PORT) on the same metadata DB and key, serving
    /// pools on `port`, logging to `pooler.log`; to be stopped with [`Pooler::stop`] (dropped, it
    /// is killed, and the PgBouncers it runs are left behind).
    pub fn pooler(&self, server: &str, port: u16) -> Result<Pooler> {
        let ports = format!("{port}-{port}");
        let run_dir = self.options.work_dir.join("pooler");
        let log = std::fs::File::create(self.options.work_dir.join("pooler.log"))
            .context("creating the pooler log")?;
        Command::new(&self.options.bin)
            .args(["pooler", "--server", server, "--ports", &ports, "--log-format", "json", "--run-dir"])
            .arg(&run_dir)
            .env("PGPLANE_DATABASE_URL", &self.options.database_url)
            .env("PGPLANE_SECRET_KEY", &self.key)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("sharing the pooler log")?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map(|child| Pooler { child })
            .context("starting pgplane pooler")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "pgplane serve exited ({status}); its log: {}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            if self.api.ready().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("pgplane serve did not become ready within 30 s")
    }

    /// Current and peak resident memory, in KiB.
    pub fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading /proc/<pid>/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") })
    }

    /// Resets the peak resident set size (VmHWM) to the current one; false when the kernel
    /// refuses (then VmHWM stays the peak since start).
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// Reconcile passes that finished at or after `since`, from the log.
    pub fn passes_since(&self, since: DateTime<Utc>) -> Result<Vec<PassEvent>> {
        let log = std::fs::read_to_string(&self.log_path).context("reading the pgplane log")?;
        Ok(log.lines().filter_map(PassEvent::parse).filter(|p| p.finished_at >= since).collect())
    }

    /// Kills it with SIGKILL, without waiting.
    pub fn kill(&mut self) -> Result<()> {
        self.child.start_kill().context("sending SIGKILL to pgplane")
    }

    /// Stops it with SIGTERM (graceful), or kills it after 15 s.
    pub async fn stop(mut self) -> Result<()> {
        terminate(&mut self.child, "pgplane").await
    }
}

/// A running `pgplane pooler` ([`Pgplane::pooler`]).
pub struct Pooler {
    child: Child,
}

impl Pooler {
    /// Stops it with SIGTERM, which stops the PgBouncers it runs, or kills it after 15 s.
    pub async fn stop(mut self) -> Result<()> {
        terminate(&mut self.child, "pgplane pooler").await
    }
}

/// Sends `child` SIGTERM and waits for it to exit, or kills it after 15 s.
async fn terminate(child: &mut Child, what: &str) -> Result<()> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(_) => Ok(()),
        Err(_) => {
            child.kill().await?;
            bail!("{what} did not stop within 15 s of SIGTERM")
        }
    }
}

/// Resident memory of the process, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One "reconcile pass finished" event.
#[derive(Debug, Clone)]
pub struct PassEvent {
    pub cluster_id: String,
    pub finished_at: DateTime<Utc>,
    pub elapsed_ms: f64,
    pub users: u64,
    pub databases: u64,
    pub changes: u64,
}

impl PassEvent {
    fn parse(line: &str) -> Option<Self> {
        if !line.contains("reconcile pass finished") {
            return None;
        }
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = &v["fields"];
        if fields["message"] != "reconcile pass finished" {
            return None;
        }
        Some(Self {
            cluster_id: fields["cluster.id"].as_str()?.to_string(),
            finished_at: v["timestamp"].as_str()?.parse().ok()?,
            elapsed_ms: fields["elapsed_ms"].as_f64()?,
            users: fields["users"].as_u64().unwrap_or(0),
            databases: fields["databases"].as_u64().unwrap_or(0),
            changes: fields["changes"].as_u64().unwrap_or(0),
        })
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.finished_at - chrono::Duration::microseconds((self.elapsed_ms * 1e3) as i64)
    }
}

/// What the passes over one cluster did during a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassStats {
    pub passes: usize,
    pub changes: u64,
    pub busy_ms: f64,
}

impl PassStats {
    pub fn of<'a>(events: impl IntoIterator<Item = &'a PassEvent>, cluster_id: &str) -> Self {
        let mut s = Self::default();
        for e in events.into_iter().filter(|e| e.cluster_id == cluster_id) {
            s.passes += 1;
            s.changes += e.changes;
            s.busy_ms += e.elapsed_ms;
        }
        s
    }
}

/// The registration body for a target whose superuser pgplane manages it with.
pub fn registration(name: &str, target: &pgplane_testkit::PgServer) -> Value {
    json!({
        "name": name,
        "engine": "pg",
        "region": "local",
        "size": "bench",
        "num_nodes": 1,
        "pgplane": {
            "host": target.host,
            "port": target.port,
            "user": target.user,
            "password": target.password,
            "sslmode": "disable",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_events_are_read_from_json_log_lines() {
        let line = r#"{"timestamp":"2026-11-26T23:10:00.500000Z","level":"DEBUG","fields":{"message":"reconcile pass finished","cluster.id":"c1","users":3,"databases":1,"changes":2,"reached":true,"elapsed_ms":250.0},"target":"pgplane_reconciler::controller"}"#;
        let e = PassEvent::parse(line).expect("parsed");
        assert_eq!(e.cluster_id, "c1");
        assert_eq!((e.users, e.databases, e.changes), (3, 1, 2));
        assert_eq!(e.started_at().to_rfc3339(), "2026-11-26T23:10:00.250+00:00");
        assert!(PassEvent::parse(r#"{"fields":{"message":"role step"}}"#).is_none());
        let stats = PassStats::of([&e, &e], "c1");
        assert_eq!((stats.passes, stats.changes), (2, 4));
    }
}
