//! A whole pgplane for one test: its own metadata database on the metadata server, the gateway
//! on a random loopback port, the reconciler in the same runtime, an admin token, and one
//! cluster registered on a target with names unique to the test (a dedicated superuser admin
//! role, primary user and default database), so that tests can share servers. Dropping it
//! removes every role and database named with the test's suffix (see `cleanup`).

use std::time::Duration;

use pgplane_app::{Api, Parts};
use pgplane_core::secrets::Sealer;
use pgplane_core::{tokens, Store};
use pgplane_gateway::{FailureLimits, GatewayConfig, ServeLimits};
use pgplane_reconciler::{Reconciler, ReconcilerConfig};
use pgplane_target_server::SessionLimits;
use pgplane_target_server::TargetPolicy;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::cleanup::{remove_now, Claim, META_DB_PREFIX, META_ROLE_PREFIX};
use crate::servers::{servers, PgServer};
use crate::unique_suffix;

/// How to run the pgplane under test.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Major version of the target the cluster is registered on (15 or 17).
    pub target_major: u32,
    pub apply_timeout: Duration,
    pub resync_interval: Duration,
    /// Register a cluster at start.
    pub register: bool,
    /// Requests a minute per token (0: no limit).
    pub rate_limit_per_minute: u32,
    /// A server for the metadata database other than the shared one (outage tests).
    pub metadata_server: Option<PgServer>,
    /// A target other than the shared one of `target_major` (outage tests).
    pub target_server: Option<PgServer>,
    /// Run a reconciler in the test process (off when a `pgplane serve` process reconciles).
    pub reconciler: bool,
    /// Where targets may be (the default policy allows loopback).
    pub target_policy: TargetPolicy,
    /// Registration probes a minute per team (0: no limit).
    pub probes_per_minute: u32,
    /// Clusters reconciled at once (and, per team, half of them).
    pub max_concurrent_passes: usize,
    /// Most sessions the reconciler holds on one target server.
    pub max_sessions_per_server: usize,
    /// Failed authentications allowed a minute per client address and per token id.
    pub auth_failures: FailureLimits,
    /// Limits on the gateway's connections (slow, idle, too many).
    pub serve_limits: ServeLimits,
    /// Serve the web console at `/`.
    pub console: bool,
    /// The operator allows REPLICATION for clusters alone on their server.
    pub allow_replication_for_sole_tenants: bool,
    /// Registrations refuse a primary user with foreign memberships (`--adopted-primary-user=refuse`).
    pub refuse_foreign_primary_user: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            target_major: 15,
            apply_timeout: Duration::from_secs(10),
            resync_interval: Duration::from_secs(60),
            register: true,
            rate_limit_per_minute: 0,
            metadata_server: None,
            target_server: None,
            reconciler: true,
            target_policy: TargetPolicy::default(),
            probes_per_minute: 0,
            max_concurrent_passes: 4,
            max_sessions_per_server: ReconcilerConfig::default().max_sessions_per_server,
            auth_failures: FailureLimits::default(),
            serve_limits: ServeLimits::default(),
            console: true,
            allow_replication_for_sole_tenants: false,
            refuse_foreign_primary_user: false,
        }
    }
}

/// A running pgplane and the cluster it manages for the test.
pub struct TestApp {
    pub base_url: String,
    /// The metadata database, as pgplane's least-privilege role sees it.
    pub metadata_url: String,
    /// The sealing key (base64), for running `pgplane serve` against the same metadata.
    pub secret_key: String,
    pub token: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub sealer: Sealer,
    pub target: PgServer,
    /// Unique to this test; part of every name it creates on the target.
    pub suffix: String,
    /// The admin role pgplane uses on the target (a superuser made for this test).
    pub admin_user: String,
    pub admin_password: String,
    pub cluster_id: String,
    /// The in-process reconciler (for its counters, or to run a pass now).
    pub reconciler: Reconciler,
    pub primary_user: String,
    pub default_db: String,
    /// The pgplane under test, stopped when the app is dropped.
    process: Option<Process>,
    /// The servers holding the test's objects, cleaned when it is dropped.
    used: Vec<PgServer>,
    /// Keeps the test's names from being swept while it runs; released after the cleanup.
    _claim: Claim,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(process) = &self.process {
            process.stop.cancel();
        }
        remove_now(std::mem::take(&mut self.used), self.suffix.clone());
    }
}

impl TestApp {
    /// pgplane with a cluster on a PostgreSQL `major` target.
    pub async fn spawn(major: u32) -> Self {
        Self::spawn_with(AppOptions { target_major: major, ..AppOptions::default() }).await
    }

    pub async fn spawn_with(options: AppOptions) -> Self {
        crate::logs::install();
        let servers = servers();
        let metadata_server = options.metadata_server.clone().unwrap_or_else(|| servers.metadata.clone());
        let suffix = unique_suffix();
        let claim = Claim::take(&metadata_server, &suffix).await;
        // pgplane runs with least privilege on its metadata database, as deploy/metadata-role.sql
        // sets it up: a plain login role that owns its database and nothing else.
        let meta_db = format!("{META_DB_PREFIX}{suffix}");
        let meta_role = format!("{META_ROLE_PREFIX}{suffix}");
        let meta_password = format!("meta-{}", unique_suffix());
        let meta_admin = metadata_server.admin("postgres").await;
        meta_admin
            .batch_execute(&format!(
                "CREATE ROLE {meta_role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{meta_password}'"
            ))
            .await
            .expect("create metadata role");
        meta_admin
            .batch_execute(&format!("CREATE DATABASE {meta_db} OWNER {meta_role}"))
            .await
            .expect("create metadata database");
        let meta_url = format!(
            "postgres://{meta_role}:{meta_password}@{}:{}/{meta_db}",
            metadata_server.host, metadata_server.port
        );
        let store = Store::connect_lazy(&meta_url, 10).expect("store");
        store.migrate().await.expect("migrate");
        let sealer_key = Sealer::generate_key();
        let sealer = Sealer::from_base64(&sealer_key).expect("key");
        let issued = tokio::task::spawn_blocking(tokens::issue).await.expect("token");
        store
            .insert_token(pgplane_core::model::DEFAULT_TEAM_ID, "test", &issued, &["*".into()], None)
            .await
            .expect("insert token");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let reconciler = ReconcilerConfig {
            resync_interval: options.resync_interval,
            max_concurrent_passes: options.max_concurrent_passes,
            max_passes_per_team: 0,
            session_limits: SessionLimits::default(),
            target_policy: options.target_policy.clone(),
            max_sessions_per_server: options.max_sessions_per_server,
            allow_replication_for_sole_tenants: options.allow_replication_for_sole_tenants,
            ..ReconcilerConfig::default()
        };
        let config = GatewayConfig {
            apply_timeout: options.apply_timeout,
            rate_limit_per_minute: options.rate_limit_per_minute,
            auth_failures: options.auth_failures,
            target_policy: options.target_policy.clone(),
            probes_per_minute: options.probes_per_minute,
            console: options.console,
            allow_replication_for_sole_tenants: options.allow_replication_for_sole_tenants,
            refuse_foreign_primary_user: options.refuse_foreign_primary_user,
            ..GatewayConfig::default()
        };
        let parts = Parts {
            api: Some(Api { listener, tls: None, config, limits: options.serve_limits }),
            reconciler,
            reconcile: options.reconciler,
            ..Parts::default()
        };
        let process = Process::start(store.clone(), sealer.clone(), parts, CancellationToken::new());
        let base_url = format!("http://{}", process.api_address.expect("the API listens"));
        let reconciler = process.reconciler.clone();

        let target =
            options.target_server.clone().unwrap_or_else(|| servers.target(options.target_major).clone());
        let mut used = vec![target.clone()];
        if (metadata_server.host.as_str(), metadata_server.port) != (target.host.as_str(), target.port) {
            used.push(metadata_server.clone());
        }
        let admin_user = format!("adm_{suffix}");
        let admin_password = format!("adm-pw-{}", unique_suffix());
        // Like pgplane itself, the fixture sends only a verifier, with statement logging off:
        // leak tests search the target's log for this password too.
        let verifier = pgplane_core::passwords::scram_verifier(&admin_password);
        let admin = target.admin("postgres").await;
        admin.batch_execute(pgplane_target_server::sql::QUIET).await.expect("suppress logging");
        admin
            .batch_execute(&format!("CREATE ROLE {admin_user} SUPERUSER LOGIN PASSWORD '{verifier}'"))
            .await
            .expect("create test admin role");
        admin.batch_execute(pgplane_target_server::sql::LOUD).await.expect("restore logging");

        let secret_key = sealer_key.clone();
        let mut app = TestApp {
            metadata_url: meta_url,
            secret_key,
            base_url,
            token: issued.token,
            http: reqwest::Client::new(),
            store,
            sealer,
            target,
            primary_user: format!("doadmin_{suffix}"),
            default_db: format!("defaultdb_{suffix}"),
            suffix,
            admin_user,
            admin_password,
            cluster_id: String::new(),
            reconciler,
            process: Some(process),
            used,
            _claim: claim,
        };
        if options.register {
            app.register().await;
        }
        app
    }

    /// Starts another gateway on the same metadata database, as a second replica would run (its
    /// own pool, token cache and revocation listener; no reconciler), on its own loopback port;
    /// returns its base URL. It stops with the test app.
    pub async fn second_gateway(&self) -> String {
        let gateway = self
            .start_gateway(None, GatewayConfig { rate_limit_per_minute: 0, ..GatewayConfig::default() })
            .await;
        // Dropping the handle leaves it running until the test app stops it.
        format!("http://{}", gateway.api_address.expect("the API listens"))
    }

    /// Starts another pgplane process on the test's metadata database (its own store) running
    /// `parts`; it stops when told, or with the test app.
    pub fn start_process(&self, parts: Parts) -> Process {
        let store = Store::connect_lazy(&self.metadata_url, 10).expect("store");
        let stop = self.process.as_ref().map_or_else(CancellationToken::new, |p| p.stop.child_token());
        Process::start(store, self.sealer.clone(), parts, stop)
    }

    /// Another gateway on a loopback port (over TLS with `tls`), with no reconciler.
    pub async fn start_gateway(&self, tls: Option<rustls::ServerConfig>, config: GatewayConfig) -> Process {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = Api { listener, tls, config, limits: ServeLimits::default() };
        self.start_process(Parts { api: Some(api), ..Parts::default() })
    }

    /// Another reconciler, running until stopped (or until the test app is dropped).
    pub fn start_reconciler(&self, config: ReconcilerConfig) -> Process {
        self.start_process(Parts { reconciler: config, reconcile: true, ..Parts::default() })
    }

    /// Registers the test's cluster (done by `spawn` unless `register` is off) and waits for it
    /// to be online.
    pub async fn register(&mut self) {
        let (status, body) =
            self.post("/v2/databases", self.registration(&format!("c-{}", self.suffix))).await;
        assert_eq!(status, 201, "registering the test cluster: {body}");
        assert_eq!(body["database"]["status"], "online", "{body}");
        self.cluster_id = body["database"]["id"].as_str().expect("id").to_string();
    }

    /// Registers the test's cluster with a reconciler that runs only for that, for tests that
    /// start without one (`reconciler: false`): the cluster is online, later writes stay pending.
    pub async fn register_then_stop_reconciling(&mut self) {
        let reconciler = self.start_reconciler(ReconcilerConfig::default());
        self.register().await;
        reconciler.stop().await.expect("the reconciler ran until stopped");
    }

    /// A registration body for this test's target, primary user and default database.
    pub fn registration(&self, name: &str) -> Value {
        json!({
            "name": name,
            "engine": "pg",
            "region": "nyc3",
            "size": "db-s-1vcpu-1gb",
            "num_nodes": 1,
            "pgplane": {
                "host": self.target.host,
                "port": self.target.port,
                "user": self.admin_user,
                "password": self.admin_password,
                "sslmode": "disable",
                "primary_user": self.primary_user,
                "default_database": self.default_db,
            }
        })
    }

    /// `base` made unique to this test.
    pub fn unique(&self, base: &str) -> String {
        format!("{base}_{}", self.suffix)
    }

    /// The path of this test's cluster, plus `rest`.
    pub fn cluster_path(&self, rest: &str) -> String {
        format!("/v2/databases/{}{rest}", self.cluster_id)
    }

    /// Sends a request with the test's token; returns the status and the JSON body (Null when
    /// empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    /// Sends a request with another token.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("non-JSON body with {status}: {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a user through the API; returns its password.
    pub async fn create_user(&self, name: &str) -> String {
        let (status, body) = self.post(&self.cluster_path("/users"), json!({ "name": name })).await;
        assert_eq!(status, 201, "creating user {name}: {body}");
        body["user"]["password"].as_str().expect("password").to_string()
    }

    /// Creates a database through the API.
    pub async fn create_db(&self, name: &str) {
        let (status, body) = self.post(&self.cluster_path("/dbs"), json!({ "name": name })).await;
        assert_eq!(status, 201, "creating database {name}: {body}");
    }

    /// Lets `user` create in the `public` schema of `database` and creates `table` there as
    /// that user (logging in with `password`).
    pub async fn create_owned_table(&self, user: &str, password: &str, database: &str, table: &str) {
        let grant = format!("GRANT CREATE ON SCHEMA public TO {}", pgplane_target_server::sql::ident(user));
        self.target_admin(database).await.batch_execute(&grant).await.expect("grant CREATE on public");
        let session = self.target.login(user, password, database).await.expect("the user logs in");
        let create = format!("CREATE TABLE public.{} (id int)", pgplane_target_server::sql::ident(table));
        session.batch_execute(&create).await.expect("create the user's table");
    }

    /// The primary user's current password, from the API.
    pub async fn primary_password(&self) -> String {
        let (_, body) = self.get(&self.cluster_path(&format!("/users/{}", self.primary_user))).await;
        body["user"]["password"].as_str().expect("password").to_string()
    }

    /// A superuser session on the target.
    pub async fn target_admin(&self, database: &str) -> tokio_postgres::Client {
        self.target.admin(database).await
    }

    /// A session of the test's metadata database, as pgplane's own role sees it (to hold rows,
    /// or to set up what the API cannot).
    pub async fn metadata_session(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.metadata_url, tokio_postgres::NoTls)
            .await
            .expect("metadata session");
        tokio::spawn(connection);
        client
    }

    /// Runs a query on the target as superuser and returns the first column of each row.
    pub async fn target_strings(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<String> {
        self.target_admin("postgres")
            .await
            .query(sql, params)
            .await
            .expect("target query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Whether a role exists on the target.
    pub async fn role_exists(&self, name: &str) -> bool {
        !self
            .target_strings("SELECT rolname::text FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .is_empty()
    }

    /// Whether a database exists on the target.
    pub async fn database_exists(&self, name: &str) -> bool {
        !self
            .target_strings("SELECT datname::text FROM pg_database WHERE datname = $1", &[&name])
            .await
            .is_empty()
    }

    /// The name of this test's metadata database.
    pub fn metadata_database(&self) -> String {
        format!("{META_DB_PREFIX}{}", self.suffix)
    }

    /// Issues a token for `team` (created if missing) with `scopes`.
    pub async fn issue_token(&self, team: &str, scopes: &[&str]) -> String {
        let team_id = self.store.ensure_team(team).await.expect("team");
        let issued = tokio::task::spawn_blocking(tokens::issue).await.expect("token");
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.store.insert_token(team_id, "test", &issued, &scopes, None).await.expect("insert token");
        issued.token
    }

    /// Polls `check` every 100 ms until it holds or `timeout` passes.
    pub async fn eventually<F, Fut>(&self, timeout: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check().await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A pgplane process started by the test kit (through the composition root, as `pgplane serve`
/// starts one).
pub struct Process {
    stop: CancellationToken,
    ended: tokio::task::JoinHandle<Result<(), String>>,
    /// Its reconciler (running when its parts said so).
    pub reconciler: Reconciler,
    /// Where its API listens.
    pub api_address: Option<std::net::SocketAddr>,
}

impl Process {
    fn start(store: Store, sealer: Sealer, parts: Parts, stop: CancellationToken) -> Self {
        let running = pgplane_app::start(store, sealer, parts).expect("starting pgplane");
        let (reconciler, api_address) = (running.reconciler.clone(), running.api_address);
        let until = stop.clone();
        let ended = tokio::spawn(running.run_until(until.cancelled_owned()));
        Process { stop, ended, reconciler, api_address }
    }

    /// Stops it; answers how it ended (an error when a part of it died before).
    pub async fn stop(self) -> Result<(), String> {
        self.stop.cancel();
        self.ended.await.map_err(|e| e.to_string())?
    }
}
