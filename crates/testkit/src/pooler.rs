//! A `pgplane pooler` for a test: in the test process, beside the test's target server, on the
//! test's metadata database, its PgBouncers on one free loopback port and in a folder of the
//! test's own; stopped (with its PgBouncers) when told or when dropped.

use std::path::PathBuf;

use pgplane_pooler::{Launcher, PoolerConfig};
use pgplane_target_server::TargetPolicy;
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;
use crate::servers::free_port;

/// A running pooler.
pub struct TestPooler {
    /// The port the cluster's PgBouncer listens on.
    pub port: u16,
    pub run_dir: PathBuf,
    stop: CancellationToken,
    ended: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestPooler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Starts a pooler beside the test's target, for the clusters registered at its address.
    pub async fn start_pooler(&self) -> TestPooler {
        self.start_pooler_for(&self.target.host.clone()).await
    }

    /// Starts a pooler beside the test's target, for the clusters registered with it as
    /// `server_host` (another name of the same server); returns once it has registered (a pool
    /// asked for before then is refused: no pooler serves the server).
    pub async fn start_pooler_for(&self, server_host: &str) -> TestPooler {
        let port = free_port();
        let run_dir = std::env::temp_dir().join(format!("pgplane-pooler-{}-{port}", self.suffix));
        let config = PoolerConfig {
            server_host: server_host.to_string(),
            server_port: self.target.port,
            listen_host: "127.0.0.1".into(),
            advertise_host: "127.0.0.1".into(),
            ports: (port, port),
            run_dir: run_dir.clone(),
            launcher: Launcher::new("pgbouncer".into(), "postgres").expect("PgBouncer's user"),
            reserve: 13,
            team_share: 50,
            max_client_conn: 200,
            policy: TargetPolicy::default().with_plaintext_anywhere(true),
        };
        let store = pgplane_core::store::Store::connect_lazy(&self.metadata_url, 4).expect("store");
        let stop = CancellationToken::new();
        let until = stop.clone();
        let ended =
            tokio::spawn(pgplane_pooler::run(config, store, self.sealer.clone(), until.cancelled_owned()));
        let pooler = TestPooler { port, run_dir, stop, ended: Some(ended) };
        let session = self.metadata_session().await;
        let server_port = i32::from(self.target.port);
        let registered = self
            .eventually(std::time::Duration::from_secs(30), || async {
                session
                    .query_one(
                        "select count(*) from poolers where server_host = $1 and server_port = $2",
                        &[&server_host, &server_port],
                    )
                    .await
                    .is_ok_and(|row| row.get::<_, i64>(0) > 0)
            })
            .await;
        assert!(registered, "the pooler for {server_host} registered within 30 s");
        pooler
    }
}

impl TestPooler {
    /// The admin console of the PgBouncer serving `cluster_id` (for SHOW POOLS and the like).
    pub async fn console(&self, cluster_id: &str) -> tokio_postgres::Client {
        let password = std::fs::read_to_string(self.run_dir.join("admin-password")).expect("admin password");
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.run_dir.join(cluster_id))
            .port(self.port)
            .user("pg_pgplane_pooler")
            .password(password.trim())
            .dbname("pgbouncer")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("PgBouncer's admin console");
        tokio::spawn(connection);
        client
    }

    /// Waits for the pooler to end by itself (without being stopped); returns how it ended.
    pub async fn ended(mut self) -> anyhow::Result<()> {
        let ended = self.ended.take().expect("the pooler task");
        let outcome = ended.await.expect("the pooler task");
        let _ = std::fs::remove_dir_all(&self.run_dir);
        outcome
    }

    /// Stops the pooler and its PgBouncers.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(ended) = self.ended.take() {
            ended.await.expect("the pooler task").expect("the pooler ran until stopped");
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
