//! Real `pgplane serve` processes for the tests: started on the test's metadata database with
//! its secrets in files, each on its own loopback port (API and metrics), logging JSON on
//! standard output to a file (standard error to another); stopped with SIGTERM (graceful) or SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pgplane_testkit::{free_port, TestApp};

/// The files a replica reads its secrets from.
pub struct Secrets {
    pub dir: tempfile::TempDir,
    pub database_url_file: PathBuf,
    pub secret_key_file: PathBuf,
}

impl Secrets {
    pub fn of(app: &TestApp) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database_url_file = dir.path().join("database-url");
        let secret_key_file = dir.path().join("secret.key");
        std::fs::write(&database_url_file, format!("{}\n", app.metadata_url)).expect("write url file");
        std::fs::write(&secret_key_file, format!("{}\n", app.secret_key)).expect("write key file");
        Self { dir, database_url_file, secret_key_file }
    }
}

/// One `pgplane serve` process.
pub struct Replica {
    pub name: String,
    pub api_port: u16,
    pub metrics_port: u16,
    pub base_url: String,
    pub log_path: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Replica {
    /// Starts a replica and waits until it answers `/readyz` with 200.
    pub async fn start(name: &str, secrets: &Secrets, extra: &[&str]) -> Self {
        let (api_port, metrics_port) = (free_port(), free_port());
        let mut replica = Self {
            name: name.to_string(),
            api_port,
            metrics_port,
            base_url: format!("http://127.0.0.1:{api_port}"),
            log_path: secrets.dir.path().join(format!("{name}.log")),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        replica.spawn(secrets).await;
        replica
    }

    /// Starts the process again on the same ports (after a stop).
    pub async fn spawn(&mut self, secrets: &Secrets) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let open =
            |path: &Path| std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
        let (log, errors) = (open(&self.log_path), open(&self.log_path.with_extension("err")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgplane"));
        for (key, _) in std::env::vars() {
            if key.starts_with("PGPLANE_") {
                command.env_remove(key);
            }
        }
        // Everything from the environment, secrets from files, as in a container.
        command
            .arg("serve")
            .args(&self.extra)
            .env("PGPLANE_DATABASE_URL_FILE", &secrets.database_url_file)
            .env("PGPLANE_SECRET_KEY_FILE", &secrets.secret_key_file)
            .env("PGPLANE_LISTEN", format!("127.0.0.1:{}", self.api_port))
            .env("PGPLANE_METRICS_LISTEN", format!("127.0.0.1:{}", self.metrics_port))
            .env("PGPLANE_LOG_FORMAT", "json")
            .env("PGPLANE_RATE_LIMIT_PER_MINUTE", "0")
            .env("PGPLANE_REGISTRATION_PROBES_PER_MINUTE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(errors));
        self.child = Some(command.spawn().expect("start pgplane serve"));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http.get(format!("{}/readyz", self.base_url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                panic!("{} exited at start ({status}): {}{}", self.name, self.log(), self.errors());
            }
            assert!(Instant::now() < deadline, "{} not ready within 60 s: {}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the process logged so far (standard output).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What the process wrote to standard error so far.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.log_path.with_extension("err")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit; returns its status.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        rustix::process::kill_process(rustix::process::Pid::from_child(child), rustix::process::Signal::TERM)
            .expect("SIGTERM");
        self.wait(within).await
    }

    /// Kills the process with SIGKILL.
    pub async fn kill(&mut self) {
        self.child.as_mut().expect("running").kill().expect("SIGKILL");
        self.wait(Duration::from_secs(10)).await;
    }

    async fn wait(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {within:?}: {}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The JSON log lines of a log file (each must be one JSON object).
pub fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect()
}

/// The workspace's root.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// promtool, from Debian's `prometheus` package (deploy/dev/prepare-tests.sh installs it).
pub fn promtool() -> Command {
    let found =
        Command::new("promtool").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "promtool is missing: run deploy/dev/prepare-tests.sh (or apt-get install prometheus)"
    );
    Command::new("promtool")
}
