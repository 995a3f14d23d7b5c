//! The PostgreSQL servers tests run against: containers started by testcontainers from the
//! locally built `pgplane-pg:15` and `pgplane-pg:17` images, with host networking, each on its
//! own free loopback port. They live as long as the test process; a small watcher process
//! removes them when it exits (the containers are never dropped from their statics).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};
use tokio_postgres::{Client, NoTls};

/// One PostgreSQL server, reached as a superuser.
#[derive(Debug, Clone)]
pub struct PgServer {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The container, when the testkit started one.
    pub container_id: Option<String>,
}

/// The servers of this test process.
#[derive(Debug)]
pub struct Servers {
    /// Holds each test's metadata database.
    pub metadata: PgServer,
    /// Targets by major version (15 and 17; one shared server with PGPLANE_TEST_PG_URL).
    pub pg15: PgServer,
    pub pg17: PgServer,
}

impl Servers {
    /// The target of a major version.
    pub fn target(&self, major: u32) -> &PgServer {
        match major {
            15 => &self.pg15,
            17 => &self.pg17,
            other => panic!("no PostgreSQL {other} target in the testkit"),
        }
    }
}

/// Keeps containers alive for the life of the process.
static CONTAINERS: OnceLock<Vec<Container<GenericImage>>> = OnceLock::new();
static SERVERS: OnceLock<Servers> = OnceLock::new();

/// The servers, started on first use.
pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        // The blocking testcontainers runner must not run on an async worker thread.
        std::thread::spawn(start_servers).join().expect("starting test servers")
    })
}

fn start_servers() -> Servers {
    if let Ok(url) = std::env::var("PGPLANE_TEST_PG_URL") {
        let server = PgServer::from_url(&url);
        sweep_stale_runs(&server);
        return Servers { metadata: server.clone(), pg15: server.clone(), pg17: server };
    }
    let started: Vec<(Container<GenericImage>, PgServer)> =
        [("15", "meta"), ("15", "target"), ("17", "target")]
            .into_iter()
            .map(|(tag, role)| start_container(tag, role))
            .collect();
    let ids: Vec<String> = started.iter().map(|(c, _)| c.id().to_string()).collect();
    remove_at_exit(&ids);
    let mut servers: Vec<PgServer> = started.iter().map(|(_, s)| s.clone()).collect();
    let _ = CONTAINERS.set(started.into_iter().map(|(c, _)| c).collect());
    let pg17 = servers.pop().expect("three servers");
    let pg15 = servers.pop().expect("three servers");
    let metadata = servers.pop().expect("three servers");
    Servers { metadata, pg15, pg17 }
}

/// Removes what killed earlier runs left on a server of the developer's (see `cleanup`).
fn sweep_stale_runs(server: &PgServer) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match runtime.block_on(crate::cleanup::sweep_stale(server)) {
        Ok(swept) if swept.is_empty() => {}
        Ok(swept) => eprintln!("testkit: removed what {} killed test(s) left behind", swept.len()),
        Err(e) => eprintln!("testkit: could not sweep what earlier test runs left behind: {e}"),
    }
}

/// Whether tests may start containers of their own (not when PGPLANE_TEST_PG_URL points them
/// at an existing server). Tests that need their own servers (outages, TLS, server logs) skip
/// themselves, saying so, when this is false.
pub fn own_containers() -> bool {
    let available = std::env::var_os("PGPLANE_TEST_PG_URL").is_none();
    if !available {
        eprintln!("skipped: needs servers of its own, and PGPLANE_TEST_PG_URL is set");
    }
    available
}

/// A free loopback port for a server to listen on (bound, then released for it to take).
///
/// It is drawn below the kernel's ephemeral range: a port from that range can be taken, between
/// its release and the server's bind, as the local end of any outgoing connection on the
/// machine, and the server then fails to start.
pub fn free_port() -> u16 {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let range = 10_000..ephemeral_low.max(10_001);
    for _ in 0..200 {
        let port = rand::rng().random_range(range.clone());
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {range:?}")
}

fn start_container(tag: &str, role: &str) -> (Container<GenericImage>, PgServer) {
    start_container_with(tag, role, None)
}

/// How often a container start is tried before the test gives up: a loaded machine (the
/// engine busy removing the containers of the test process before) can stall one start.
pub const START_ATTEMPTS: usize = 3;

/// Starts a container; `certs`, a directory with server.crt and server.key, turns TLS on.
fn start_container_with(
    tag: &str,
    role: &str,
    certs: Option<&std::path::Path>,
) -> (Container<GenericImage>, PgServer) {
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        match try_start_container(tag, role, certs) {
            Ok(started) => return started,
            Err(failure) => {
                eprintln!("testkit: starting a pgplane-pg:{tag} container failed, trying again: {failure}");
                failures.push(failure);
            }
        }
    }
    panic!(
        "cannot start a pgplane-pg:{tag} container ({}); build the images with \
         deploy/images/build.sh and start dockerd, or set PGPLANE_TEST_PG_URL",
        failures.join("; ")
    )
}

/// One attempt; a container it leaves behind on failure is removed, its last log lines kept
/// in the error.
fn try_start_container(
    tag: &str,
    role: &str,
    certs: Option<&std::path::Path>,
) -> Result<(Container<GenericImage>, PgServer), String> {
    let port = free_port();
    let password = format!("pw-{}", crate::unique_suffix());
    let attempt = crate::unique_suffix();
    let mut request = GenericImage::new("pgplane-pg", tag)
        .with_wait_for(WaitFor::message_on_stderr("database system is ready to accept connections"))
        .with_network("host")
        .with_env_var("PGPORT", port.to_string())
        .with_env_var("POSTGRES_PASSWORD", &password)
        .with_label("pgplane.test", role)
        .with_label("pgplane.test.attempt", &attempt)
        .with_cmd([
            "-c",
            "log_statement=all",
            "-c",
            "log_min_error_statement=debug5",
            // Every other way a statement reaches the log, on too: the leak test checks that
            // pgplane turns each off while it sends verifiers.
            "-c",
            "log_min_duration_statement=0",
            "-c",
            "log_transaction_sample_rate=1",
            "-c",
            "max_connections=300",
        ])
        .with_startup_timeout(Duration::from_secs(90));
    if let Some(dir) = certs {
        request = request.with_mount(Mount::bind_mount(dir.to_string_lossy(), "/certs"));
    }
    let container = request.start().map_err(|e| format!("{e}{}", remove_attempt(&attempt)))?;
    let server = PgServer {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password,
        container_id: Some(container.id().to_string()),
    };
    Ok((container, server))
}

/// Removes what a failed attempt left running (the containers labelled
/// `pgplane.test.attempt=<attempt>`), answering its last log lines.
pub fn remove_attempt(attempt: &str) -> String {
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
                    + &String::from_utf8_lossy(&out.stderr)
            })
            .unwrap_or_default()
    };
    let filter = format!("label=pgplane.test.attempt={attempt}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    let mut logs = String::new();
    for id in ids.split_whitespace() {
        logs += &docker(&["logs", "--tail", "5", id]);
        docker(&["rm", "-fv", id]);
    }
    if logs.trim().is_empty() {
        String::new()
    } else {
        format!("; its last log lines: {}", logs.trim())
    }
}

/// Starts a process that removes the containers once this process has exited, however it
/// exits (the containers are never dropped from their statics).
pub fn remove_at_exit(ids: &[String]) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; docker rm -fv {ids} >/dev/null 2>&1",
        pid = std::process::id(),
        ids = ids.join(" ")
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

impl PgServer {
    fn from_url(url: &str) -> Self {
        let config: tokio_postgres::Config = url.parse().expect("PGPLANE_TEST_PG_URL is a postgres URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        Self {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").to_string(),
            password: String::from_utf8_lossy(config.get_password().unwrap_or_default()).into_owned(),
            container_id: None,
        }
    }

    /// A postgres:// URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{}:{}@{}:{}/{}", self.user, self.password, self.host, self.port, database)
    }

    /// Logs in to `database` as `user` with `password`.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(&self.host)
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .connect_timeout(Duration::from_secs(5))
            .connect(NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A superuser session on `database`.
    pub async fn admin(&self, database: &str) -> Client {
        self.login(&self.user, &self.password, database).await.expect("superuser login")
    }

    /// The server's log so far (containers only).
    pub fn log(&self) -> String {
        let Some(id) = &self.container_id else {
            return String::new();
        };
        let out = Command::new("docker").args(["logs", id]).output().expect("docker logs");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

/// A server of one test's own, which the test may stop and start again (outage tests). Its
/// container is removed when it is dropped, or by the watcher when the process exits.
pub struct OwnServer {
    pub server: PgServer,
    container: Option<Container<GenericImage>>,
}

impl OwnServer {
    /// Starts a PostgreSQL `major` server for one test.
    pub async fn start(major: u32) -> Self {
        Self::start_with(major, None).await
    }

    /// Starts a PostgreSQL `major` server that also accepts TLS, with the certificate and key
    /// found in `certs` (server.crt, server.key).
    pub async fn start_with_tls(major: u32, certs: &std::path::Path) -> Self {
        Self::start_with(major, Some(certs.to_path_buf())).await
    }

    async fn start_with(major: u32, certs: Option<std::path::PathBuf>) -> Self {
        let (container, server) = tokio::task::spawn_blocking(move || {
            start_container_with(&major.to_string(), "own", certs.as_deref())
        })
        .await
        .expect("start container");
        remove_at_exit(&[container.id().to_string()]);
        Self { server, container: Some(container) }
    }

    fn docker(&self, args: &[&str]) {
        let id = self.server.container_id.as_deref().expect("container");
        let status =
            Command::new("docker").args(args).arg(id).stdout(Stdio::null()).status().expect("docker");
        assert!(status.success(), "docker {args:?} failed");
    }

    /// Stops the server (its clients see their connections closed, new ones refused).
    pub async fn stop(&self) {
        self.docker(&["stop", "--time", "2"]);
    }

    /// Starts the stopped server again and waits until it accepts logins.
    pub async fn start_again(&self) {
        self.docker(&["start"]);
        for _ in 0..100 {
            if self.server.login(&self.server.user, &self.server.password, "postgres").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the restarted server did not come back");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // The blocking runner's drop must not run on an async worker thread.
        if let Some(container) = self.container.take() {
            std::thread::spawn(move || drop(container));
        }
    }
}
