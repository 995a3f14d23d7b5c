//! Scenario 1, users: N users created, N passwords reset and N users deleted through the API
//! (`concurrency` requests in flight), each request answered once the change is applied on
//! the target; against psql running the same statements from a generated file. One run of
//! each side per call, fresh names per run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use chrono::Utc;

use crate::cpu::CpuUse;
use crate::ctx::{verifiers, Ctx};
use crate::floor;
use crate::load::{run_count, LoadResult};
use crate::pgplane::PassStats;

/// One API phase (create, reset or delete of all users).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPhase {
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub passes: PassStats,
    /// Sessions opened on the target during the phase.
    pub sessions: i64,
    pub cpu: CpuUse,
}

/// The floor's times, seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloorRun {
    pub create: f64,
    pub reset: f64,
    /// The statements pgplane's deletion sends, grouped by database.
    pub delete: f64,
    /// Bare `DROP ROLE`, for reference.
    pub bare_drop: f64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UsersRun {
    pub floor: FloorRun,
    pub create: ApiPhase,
    pub reset: ApiPhase,
    pub delete: ApiPhase,
    /// One SCRAM verifier, ms on one core (what pgplane computes per create and reset).
    pub verifier_ms: f64,
}

fn names(prefix: &str, run: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{run}_{i:04}")).collect()
}

/// The API users of a run (kept for the read scenario, which runs while they exist).
pub fn api_names(ctx: &Ctx, run: usize) -> Vec<String> {
    names("bu", run, ctx.config.users)
}

async fn api_phase<F, Fut>(ctx: &Ctx, what: &str, job: F) -> Result<ApiPhase>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let sessions_before = ctx.target_sessions().await?;
    let since = Utc::now();
    let cpu = ctx.cpu().mark();
    let result: LoadResult = run_count(ctx.config.users, ctx.config.user_concurrency, job).await;
    let cpu = ctx.cpu().since(&cpu);
    result.check(what)?;
    let (p50_ms, p99_ms) = result.p50_p99_ms();
    // The last pass logs its end just after the last answer went out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(ApiPhase {
        secs: result.wall.as_secs_f64(),
        p50_ms,
        p99_ms,
        passes: ctx.passes(since)?,
        sessions: ctx.target_sessions().await? - sessions_before - 1,
        cpu,
    })
}

/// Floor create and reset, then pgplane create and reset. The API users stay for the read
/// scenario; [`delete`] removes them.
pub async fn create_and_reset(ctx: &Ctx, run: usize) -> Result<UsersRun> {
    let n = ctx.config.users;
    let mut out = UsersRun::default();
    let floor_names = names("bf", run, n);
    let (create_verifiers, per) = verifiers(n).await?;
    let (reset_verifiers, _) = verifiers(n).await?;
    out.verifier_ms = per.as_secs_f64() * 1e3;
    let dir = &ctx.work_dir;
    let server = &ctx.target.pg;

    let roles: Vec<(String, String)> = floor_names.iter().cloned().zip(create_verifiers).collect();
    let sql = floor::create_roles_sql(&roles, &ctx.primary_user, ctx.target_version_num);
    out.floor.create = floor::psql(server, dir, "create-users.sql", &sql).await?.as_secs_f64();
    ensure!(ctx.roles_present(&floor_names).await? == n as i64);
    let roles: Vec<(String, String)> = floor_names.iter().cloned().zip(reset_verifiers).collect();
    out.floor.reset =
        floor::psql(server, dir, "reset-users.sql", &floor::reset_roles_sql(&roles)).await?.as_secs_f64();

    let api_names = Arc::new(api_names(ctx, run));
    let (api, cluster) = (ctx.pgplane.api.clone(), ctx.cluster_id.clone());
    let (a, c, nm) = (api.clone(), cluster.clone(), api_names.clone());
    out.create = api_phase(ctx, "creating users", move |i| {
        let (a, c, nm) = (a.clone(), c.clone(), nm.clone());
        async move { a.create_user(&c, &nm[i]).await }
    })
    .await?;
    ensure!(
        ctx.roles_present(&api_names).await? == n as i64,
        "not every user created through the API exists on the target"
    );
    let (a, c, nm) = (api, cluster, api_names);
    out.reset = api_phase(ctx, "resetting passwords", move |i| {
        let (a, c, nm) = (a.clone(), c.clone(), nm.clone());
        async move { a.reset_user(&c, &nm[i]).await }
    })
    .await?;
    Ok(out)
}

/// Floor deletion (same statements, and bare DROP ROLE for reference), then deletion
/// through the API.
pub async fn delete(ctx: &Ctx, run: usize, out: &mut UsersRun) -> Result<()> {
    let n = ctx.config.users;
    let dir = &ctx.work_dir;
    let server = &ctx.target.pg;
    let floor_names = names("bf", run, n);
    let sql = floor::drop_roles_sql(&floor_names);
    out.floor.delete = floor::psql(server, dir, "delete-users.sql", &sql).await?.as_secs_f64();
    ensure!(ctx.roles_present(&floor_names).await? == 0);

    // Bare DROP ROLE of password-less roles (their creation is not timed).
    let bare = names("bx", run, n);
    let create: String =
        bare.iter().map(|b| format!("CREATE ROLE {};\n", pgplane_target_server::sql::ident(b))).collect();
    floor::psql(server, dir, "bare-create.sql", &create).await?;
    out.floor.bare_drop =
        floor::psql(server, dir, "bare-drop.sql", &floor::bare_drop_roles_sql(&bare)).await?.as_secs_f64();

    let api_names = Arc::new(api_names(ctx, run));
    let (a, c, nm) = (ctx.pgplane.api.clone(), ctx.cluster_id.clone(), api_names.clone());
    out.delete = api_phase(ctx, "deleting users", move |i| {
        let (a, c, nm) = (a.clone(), c.clone(), nm.clone());
        async move { a.delete_user(&c, &nm[i]).await }
    })
    .await?;
    ensure!(
        ctx.roles_present(&api_names).await? == 0,
        "users deleted through the API are still on the target"
    );
    Ok(())
}
