//! Serving one cluster's pools: what its PgBouncer should run (the pools that can run, the
//! logins of its present users, its trusted sources), brought about (files written, PgBouncer
//! started or reloaded), checked against what PgBouncer says it runs, drift recorded, and each
//! pool's outcome reported back.

use chrono::Utc;
use pgplane_core::lifecycle::DesiredState;
use pgplane_core::model::{Cluster, User};
use pgplane_core::passwords::Credentials;
use pgplane_core::store::{PoolReport, ServedCluster};

use crate::bouncer::{Bouncer, Running};
use crate::render::{render, Files, Layout, LoginEntry, PoolEntry};
use crate::Pooler;

/// A cluster's PgBouncer and what the pooler last wrote for it and saw of it.
#[derive(Debug)]
pub(crate) struct Served {
    pub bouncer: Bouncer,
    /// The files last written (None before the first write).
    written: Option<Files>,
    /// The files PgBouncer last loaded (None while it is not known to run them).
    loaded: Option<Files>,
}

impl Pooler {
    /// Brings a cluster's PgBouncer to what its pools ask for and reports each pool's outcome.
    /// `verdict`: whether the server at the pooler's address is the cluster's.
    pub(crate) async fn serve(
        &mut self,
        served: ServedCluster,
        verdict: Result<(), String>,
    ) -> anyhow::Result<()> {
        let ServedCluster { cluster, port, pools } = served;
        let users = self.store.list_users(cluster.cluster_id).await?;
        let now = Utc::now();
        let mut reports = Vec::new();
        let mut entries = Vec::new();
        for served in &pools {
            let pool = &served.pool;
            let user = pool.user_name.as_ref().and_then(|name| users.iter().find(|u| &u.name == name));
            let refusal = match (
                &verdict,
                served.database_leaving,
                served.user_missing || (pool.user_name.is_some() && user.is_none()),
            ) {
                (Err(why), _, _) => Some(why.clone()),
                (_, true, _) => Some(format!("its database {:?} is being deleted", pool.database_name)),
                (_, _, true) => Some(format!(
                    "its user {:?} is not a user of this cluster",
                    pool.user_name.as_deref().unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(error) = refusal {
                reports.push(PoolReport {
                    name: pool.name.clone(),
                    generation: pool.applied_generation,
                    error: Some(error),
                });
                continue;
            }
            entries.push((
                PoolEntry {
                    name: pool.name.clone(),
                    database: pool.database_name.clone(),
                    user: user.map(|u| u.login().to_string()),
                    mode: pool.mode,
                    size: pool.size,
                },
                pool.generation,
                user.and_then(|u| u.valid_until.filter(|t| *t <= now)).map(|t| {
                    format!(
                        "its user {:?} expired at {}: the server refuses the pool's logins until the user's \
                         expiry is moved",
                        pool.user_name.as_deref().unwrap_or_default(),
                        t.to_rfc3339()
                    )
                }),
            ));
        }
        if entries.is_empty() {
            if let Some(gone) = self.bouncers.remove(&cluster.cluster_id) {
                gone.bouncer.stop(&self.admin_password).await;
            }
            self.store.report_pools(cluster.cluster_id, &reports).await?;
            return Ok(());
        }
        let pool_entries: Vec<PoolEntry> = entries.iter().map(|(e, _, _)| e.clone()).collect();
        let outcome = self.run_bouncer(&cluster, port, &pool_entries, &users).await;
        for (entry, generation, warning) in entries {
            // A pool PgBouncer does not run as asked keeps its applied generation (the report
            // only moves it forward).
            let (applied, error) = match &outcome {
                Err(e) => (0, Some(format!("{e:#}"))),
                Ok(mismatched) => match mismatched.iter().find(|(name, _)| *name == entry.name) {
                    Some((_, why)) => (0, Some(why.clone())),
                    None => (generation, warning),
                },
            };
            reports.push(PoolReport { name: entry.name, generation: applied, error });
        }
        self.store.report_pools(cluster.cluster_id, &reports).await?;
        Ok(())
    }

    /// Writes the cluster's files, starts or reloads its PgBouncer as needed, and checks what it
    /// runs; drift found on the way is recorded. Returns the pools PgBouncer does not run as
    /// configured, with why.
    async fn run_bouncer(
        &mut self,
        cluster: &Cluster,
        port: i32,
        pools: &[PoolEntry],
        users: &[User],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let port = u16::try_from(port)?;
        let dir = self.config.run_dir.join(cluster.cluster_id.to_string());
        let fixed: Vec<&str> = pools.iter().filter_map(|p| p.user.as_deref()).collect();
        let logins = logins(&self.sealer, cluster, users, &fixed);
        let sources: Vec<String> =
            self.store.firewall_rules(cluster.cluster_id).await?.into_iter().map(|r| r.value).collect();
        let layout = Layout {
            dir: &dir,
            listen_host: &self.config.listen_host,
            listen_port: port,
            server_host: &self.config.server_host,
            server_port: self.config.server_port,
            sslmode: &cluster.sslmode,
            has_ca: cluster.ca_certificate.is_some(),
            max_client_conn: self.config.max_client_conn,
        };
        let files = render(&layout, pools, &logins, &sources, &self.admin_password);
        let served = self.bouncers.entry(cluster.cluster_id).or_insert_with(|| Served {
            bouncer: Bouncer::new(dir.clone(), port),
            written: None,
            loaded: None,
        });
        let expected =
            |p: &PoolEntry| Running::expected(p, &self.config.server_host, self.config.server_port);
        let mut drift = Vec::new();
        let on_disk = served.bouncer.files_on_disk().await;
        if served.written.is_some() && on_disk != served.written {
            drift.push("PgBouncer's configuration was changed or removed behind the pooler's back");
            // What it loaded since is not known.
            served.loaded = None;
        }
        // Drift found is recorded even when bringing PgBouncer about fails half-way (the next
        // round would no longer see it).
        let outcome = async {
            if on_disk.as_ref() != Some(&files) {
                served
                    .bouncer
                    .write(&self.config.launcher, &files, cluster.ca_certificate.as_deref())
                    .await?;
                served.written = Some(files.clone());
            }
            // What PgBouncer runs is what it last loaded: a reload that failed is tried again.
            let reload = served.loaded.as_ref() != Some(&files);
            served.bouncer.reap();
            if served.bouncer.answers(&self.admin_password).await {
                if reload {
                    let running = served.bouncer.running(&self.admin_password).await?;
                    for name in running.keys().filter(|n| !pools.iter().any(|p| &p.name == *n)) {
                        served.bouncer.kill(&self.admin_password, name).await?;
                    }
                    // PgBouncer keeps a pool's fixed user through a RELOAD that removes it: such
                    // pools are taken out (one RELOAD without them) and then put back.
                    let losing: Vec<&str> = pools
                        .iter()
                        .filter(|p| p.user.is_none())
                        .filter(|p| running.get(&p.name).is_some_and(|r| !r.force_user.is_empty()))
                        .map(|p| p.name.as_str())
                        .collect();
                    if !losing.is_empty() {
                        let kept: Vec<PoolEntry> =
                            pools.iter().filter(|p| !losing.contains(&p.name.as_str())).cloned().collect();
                        let interim = render(&layout, &kept, &logins, &sources, &self.admin_password);
                        let ca = cluster.ca_certificate.as_deref();
                        served.bouncer.write(&self.config.launcher, &interim, ca).await?;
                        for name in &losing {
                            served.bouncer.kill(&self.admin_password, name).await?;
                        }
                        served.bouncer.reload(&self.admin_password).await?;
                        served.bouncer.write(&self.config.launcher, &files, ca).await?;
                    }
                    served.bouncer.reload(&self.admin_password).await?;
                }
            } else {
                if served.loaded.is_some() {
                    drift.push("PgBouncer was not running");
                }
                served.loaded = None;
                served.bouncer.start(&self.config.launcher, &self.admin_password).await?;
            }
            served.loaded = Some(files);
            let mut running = served.bouncer.running(&self.admin_password).await?;
            if pools.iter().any(|p| running.get(&p.name) != Some(&expected(p))) && !reload {
                // PgBouncer runs something else than its files say: read them again.
                drift.push("PgBouncer ran a pool otherwise than configured");
                served.bouncer.reload(&self.admin_password).await?;
                running = served.bouncer.running(&self.admin_password).await?;
            }
            anyhow::Ok(running)
        }
        .await;
        for description in drift {
            for pool in pools {
                self.store.record_pool_drift(cluster.cluster_id, &pool.name, description, true).await?;
            }
        }
        let running = outcome?;
        Ok(pools
            .iter()
            .filter_map(|p| match running.get(&p.name) {
                Some(r) if *r == expected(p) => None,
                Some(r) => {
                    Some((p.name.clone(), format!("PgBouncer runs the pool as {r:?}, not as configured")))
                }
                None => Some((p.name.clone(), "PgBouncer does not run the pool".to_string())),
            })
            .collect())
    }
}

/// The logins a cluster's PgBouncer accepts: each present, unexpired user's current login with
/// the verifier pgplane set on the server (so that PgBouncer logs in to the server with the
/// client's own SCRAM proof), its other login while a rotation's grace runs, and for a pool's
/// fixed user its password (PgBouncer logs in as it on behalf of every client). A user whose
/// credentials cannot be opened is left out (its logins fail).
fn logins(
    sealer: &pgplane_core::secrets::Sealer,
    cluster: &Cluster,
    users: &[User],
    fixed: &[&str],
) -> Vec<LoginEntry> {
    let now = Utc::now();
    let mut logins = Vec::new();
    for user in users.iter().filter(|u| u.state == DesiredState::Present && !u.expired_at(now)) {
        let current = Credentials::open(
            sealer,
            &user.credentials_sealed,
            &User::credentials_context(cluster.cluster_id, &user.name),
        );
        match current {
            Ok(c) => {
                let login = user.login();
                let secret = if fixed.contains(&login) { c.password } else { c.verifier };
                logins.push(LoginEntry { name: login.to_string(), secret });
            }
            Err(_) => {
                tracing::warn!(cluster_id = %cluster.cluster_id, user = %user.name, "cannot open a user's credentials")
            }
        }
        if let (Some(other), Some(sealed)) = (user.in_grace(now), &user.other_credentials_sealed) {
            if let Ok(c) = Credentials::open(
                sealer,
                sealed,
                &User::other_credentials_context(cluster.cluster_id, &user.name),
            ) {
                logins.push(LoginEntry { name: other.to_string(), secret: c.verifier });
            }
        }
    }
    logins
}
