//! Scenario 3, reads: `GET .../users` on the cluster while it has N users, and
//! `GET /v2/databases/{id}` (the cluster with its users, databases and connection), with
//! authentication on, for a fixed time at each concurrency; against pgbench running the
//! SELECTs those requests make on the metadata DB (`-M prepared`, same concurrency).
//! Also owns the peak memory under this load.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::ctx::Ctx;
use crate::floor;
use crate::load::run_for;

/// One endpoint at one concurrency, one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadSample {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Both sides of one endpoint at one concurrency, one run.
#[derive(Debug, Clone)]
pub struct ReadPoint {
    pub endpoint: Endpoint,
    pub concurrency: usize,
    pub pgplane: ReadSample,
    pub floor: ReadSample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Users,
    Cluster,
}

impl Endpoint {
    pub const ALL: [Endpoint; 2] = [Endpoint::Users, Endpoint::Cluster];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Users => "GET /v2/databases/{id}/users",
            Endpoint::Cluster => "GET /v2/databases/{id}",
        }
    }

    fn path(self, ctx: &Ctx) -> String {
        match self {
            Endpoint::Users => ctx.cluster_path("/users"),
            Endpoint::Cluster => ctx.cluster_path(""),
        }
    }

    /// The statements the request runs on the metadata DB, as the store writes them (crates/core
    /// store: the caller's cluster and, at the same time, for the users list the users with
    /// their parameters, the access levels and the databases the levels name; for the cluster
    /// view the users, the databases and the trusted sources). The token check is served from
    /// the gateway's cache after the first request.
    pub fn script(self, cluster_id: &str, team_id: &str) -> String {
        let cluster =
            format!("SELECT * FROM clusters WHERE cluster_id = '{cluster_id}' AND team_id = '{team_id}';");
        let users = format!(
            "SELECT u.*, coalesce(p.parameters, '[]') FROM cluster_users u \
             LEFT JOIN (SELECT user_name, jsonb_agg(jsonb_build_object('name', name, 'value', value, 'database', database_name) \
                                                    ORDER BY database_name NULLS FIRST, name) AS parameters \
                          FROM cluster_user_parameters WHERE cluster_id = '{cluster_id}' GROUP BY user_name) p \
               ON p.user_name = u.name \
             WHERE u.cluster_id = '{cluster_id}' ORDER BY u.name;"
        );
        let databases =
            format!("SELECT * FROM cluster_databases WHERE cluster_id = '{cluster_id}' ORDER BY name;");
        let rest = match self {
            Endpoint::Users => format!(
                "SELECT a.user_name, a.database_name, a.level FROM cluster_user_access a \
                   JOIN cluster_databases d ON d.cluster_id = a.cluster_id AND d.name = a.database_name \
                  WHERE a.cluster_id = '{cluster_id}' AND d.state = 'present' \
                  ORDER BY a.user_name, a.database_name;\n{databases}"
            ),
            Endpoint::Cluster => format!(
                "{databases}\nSELECT * FROM cluster_firewall_rules WHERE cluster_id = '{cluster_id}' \
                 ORDER BY created_at, value;"
            ),
        };
        format!("{cluster}\n{users}\n{rest}\n")
    }
}

/// The result of the read scenario in one run.
#[derive(Debug, Clone, Default)]
pub struct ReadsRun {
    pub points: Vec<ReadPoint>,
    /// pgplane's peak resident memory during the run's reads, KiB.
    pub peak_kib: u64,
    /// Bytes of one `GET .../users` answer.
    pub users_body_bytes: usize,
}

pub async fn team_id(ctx: &Ctx) -> Result<String> {
    let client = ctx.meta.session("pgplane").await?;
    let row = client
        .query_one("SELECT team_id::text FROM clusters WHERE cluster_id = $1::text::uuid", &[&ctx.cluster_id])
        .await?;
    Ok(row.get(0))
}

pub async fn run(ctx: &Ctx) -> Result<ReadsRun> {
    let team = team_id(ctx).await?;
    let api = &ctx.pgplane.api;
    let users = api.get_json(&ctx.cluster_path("/users")).await?;
    let count = users["users"].as_array().map_or(0, Vec::len);
    ensure!(
        count > ctx.config.users,
        "the read scenario expects the cluster to hold the users ({count} listed)"
    );
    let users_body_bytes = api.get(&ctx.cluster_path("/users")).await.map_err(anyhow::Error::msg)?;
    let mut out = ReadsRun { users_body_bytes, ..ReadsRun::default() };
    let seconds = ctx.config.read_seconds;
    let peak_reset = ctx.pgplane.reset_peak();
    for endpoint in Endpoint::ALL {
        for &concurrency in &ctx.config.read_concurrency {
            let path = endpoint.path(ctx);
            let a = api.clone();
            let p = path.clone();
            let job = move || {
                let (a, p) = (a.clone(), p.clone());
                async move { a.get(&p).await.map(|_| ()) }
            };
            // Warm up: connections open, token verified and cached.
            run_for(Duration::from_millis(500), concurrency, job.clone()).await;
            let result = run_for(Duration::from_secs(seconds), concurrency, job).await;
            result.check(endpoint.label())?;
            let (p50_ms, p99_ms) = result.p50_p99_ms();
            let pgplane = ReadSample { per_second: result.per_second(), p50_ms, p99_ms };
            let script = endpoint.script(&ctx.cluster_id, &team);
            let pg =
                floor::pgbench(&ctx.meta.pg, "pgplane", &ctx.work_dir, &script, concurrency, seconds).await?;
            out.points.push(ReadPoint {
                endpoint,
                concurrency,
                pgplane,
                floor: ReadSample { per_second: pg.tps, p50_ms: pg.p50_ms, p99_ms: pg.p99_ms },
            });
        }
    }
    let memory = ctx.pgplane.memory()?;
    out.peak_kib = if peak_reset { memory.hwm_kib } else { memory.rss_kib };
    Ok(out)
}
