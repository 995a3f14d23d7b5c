//! Scenario 8, the credential lifecycle: a rotation with a grace under a login load (`pgbench
//! -C`, a new login for every transaction, with the old password across the grace, against
//! the same load with no rotation), how soon after the grace the old login is refused; and
//! 1,000 leases expiring at once and reaped (sessions ended, roles dropped), against psql
//! running the statements of their deletion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::ctx::Ctx;
use crate::floor::{self, LoginLoad};
use crate::load::run_count;
use crate::pgplane::PassStats;

/// Clients of the login load.
pub const LOGIN_CLIENTS: usize = 4;

/// The rotation under load.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation {
    pub grace_secs: u64,
    /// Seconds each login load runs (within the grace).
    pub load_secs: u64,
    /// The load with the user's only password, no rotation.
    pub baseline: LoginLoad,
    /// The same load with the old password, started as the rotation was answered.
    pub during: LoginLoad,
    /// From the end of the grace to the first refused login with the old password.
    pub cut_after_ms: f64,
}

/// Leases expiring together and reaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leases {
    pub count: usize,
    /// Creating them through the API.
    pub create_secs: f64,
    /// From their expiry (all at once) to the last role gone from the target.
    pub reap_secs: f64,
    /// psql running the statements of their deletion.
    pub floor_secs: f64,
    pub passes: PassStats,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialsResult {
    pub rotation: Option<Rotation>,
    pub leases: Option<Leases>,
}

pub async fn run(ctx: &Ctx) -> Result<CredentialsResult> {
    Ok(CredentialsResult {
        rotation: if ctx.config.rotation_grace_secs == 0 { None } else { Some(rotation(ctx).await?) },
        leases: if ctx.config.leases == 0 { None } else { Some(leases(ctx).await?) },
    })
}

/// A user under a login load: the load alone, then the rotation with the load on the old
/// password through the grace, then when the old login stops.
async fn rotation(ctx: &Ctx) -> Result<Rotation> {
    let grace_secs = ctx.config.rotation_grace_secs.max(8);
    let load_secs = grace_secs - 3;
    let name = "brotated".to_string();
    let api = &ctx.pgplane.api;
    let user = api.user_call(&ctx.cluster_path("/users"), json!({ "name": name }), 201).await?;
    let old = user["password"].as_str().context("the user's password")?.to_string();
    let (server, dir, db) = (&ctx.target.pg, &ctx.work_dir, "defaultdb");
    let baseline = floor::pgbench_logins(server, (&name, &old, db), dir, LOGIN_CLIENTS, load_secs).await?;

    let reset = ctx.cluster_path(&format!("/users/{name}/reset_auth"));
    let rotated = api.user_call(&reset, json!({ "grace": format!("{grace_secs}s") }), 200).await?;
    let until: DateTime<Utc> = rotated["grace"]["until"].as_str().context("the grace's end")?.parse()?;
    let during = floor::pgbench_logins(server, (&name, &old, db), dir, LOGIN_CLIENTS, load_secs).await?;

    // Then logins with the old password until one is refused.
    let deadline = Instant::now() + Duration::from_secs(grace_secs + 60);
    let cut_at = loop {
        ensure!(Instant::now() < deadline, "the old login still worked a minute after its grace");
        if server.login(&name, &old, db).await.is_err() {
            break Utc::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = api.delete_user(&ctx.cluster_id, &name).await;
    Ok(Rotation {
        grace_secs,
        load_secs,
        baseline,
        during,
        cut_after_ms: (cut_at - until).num_microseconds().unwrap_or(0) as f64 / 1e3,
    })
}

/// Leases created through the API, then expired together (their end moved to now in the
/// metadata database, as if they had been created together) and reaped by pgplane; the floor
/// deletes as many roles with the same statements through psql.
async fn leases(ctx: &Ctx) -> Result<Leases> {
    let n = ctx.config.leases;
    let names: Vec<String> = (0..n).map(|i| format!("blease_{i:04}")).collect();
    let floor_names: Vec<String> = (0..n).map(|i| format!("bleasef_{i:04}")).collect();
    let (verifiers, _) = crate::ctx::verifiers(n).await?;
    let roles: Vec<(String, String)> = floor_names.iter().cloned().zip(verifiers).collect();
    let (server, dir) = (&ctx.target.pg, &ctx.work_dir);
    floor::psql(
        server,
        dir,
        "lease-floor-create.sql",
        &floor::create_roles_sql(&roles, &ctx.primary_user, ctx.target_version_num),
    )
    .await?;
    let floor_secs = floor::psql(server, dir, "lease-floor-drop.sql", &floor::drop_roles_sql(&floor_names))
        .await?
        .as_secs_f64();
    ensure!(ctx.roles_present(&floor_names).await? == 0);

    let shared = Arc::new(names.clone());
    let (api, cluster) = (ctx.pgplane.api.clone(), ctx.cluster_id.clone());
    let created = run_count(n, ctx.config.user_concurrency, move |i| {
        let (api, cluster, names) = (api.clone(), cluster.clone(), shared.clone());
        async move { api.create_lease(&cluster, &names[i], "1h").await }
    })
    .await;
    created.check("creating leases")?;
    ensure!(ctx.roles_present(&names).await? == n as i64, "not every lease exists on the target");

    let meta = ctx.meta.session("pgplane").await?;
    let since = Utc::now();
    let started = Instant::now();
    meta.execute(
        "UPDATE cluster_users SET valid_until = now() WHERE cluster_id::text = $1 AND name = ANY($2)",
        &[&ctx.cluster_id, &names],
    )
    .await?;
    let deadline = started + Duration::from_secs(600);
    while ctx.roles_present(&names).await? > 0 {
        ensure!(Instant::now() < deadline, "leases were still on the target 10 minutes after their end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reap_secs = started.elapsed().as_secs_f64();
    // The passes end once their outcomes are recorded (the rows gone), and log it then.
    let recorded = "SELECT count(*) FROM cluster_users WHERE cluster_id::text = $1 AND name = ANY($2)";
    while meta.query_one(recorded, &[&ctx.cluster_id, &names]).await?.get::<_, i64>(0) > 0 {
        ensure!(Instant::now() < deadline, "the leases' rows were still there 10 minutes after their end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Leases {
        count: n,
        create_secs: created.wall.as_secs_f64(),
        reap_secs,
        floor_secs,
        passes: ctx.passes(since)?,
    })
}
