//! Scenario 2, databases: N databases created and then dropped through the API (`concurrency`
//! requests in flight, each answered once applied), against psql running the same
//! `CREATE DATABASE ... OWNER` and `DROP DATABASE ... WITH (FORCE)` statements.

use std::sync::Arc;

use anyhow::{ensure, Result};
use chrono::Utc;

use crate::ctx::Ctx;
use crate::floor;
use crate::load::run_count;
use crate::pgplane::PassStats;

#[derive(Debug, Clone, Copy, Default)]
pub struct DbPhase {
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub passes: PassStats,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DatabasesRun {
    pub floor_create: f64,
    pub floor_drop: f64,
    pub create: DbPhase,
    pub drop: DbPhase,
}

fn names(prefix: &str, run: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{run}_{i:03}")).collect()
}

pub async fn run(ctx: &Ctx, run: usize) -> Result<DatabasesRun> {
    let n = ctx.config.databases;
    let mut out = DatabasesRun::default();
    let dir = &ctx.work_dir;
    let server = &ctx.target.pg;

    let floor_names = names("fd", run, n);
    let sql = floor::create_databases_sql(&floor_names, &ctx.primary_user);
    out.floor_create = floor::psql(server, dir, "create-dbs.sql", &sql).await?.as_secs_f64();
    ensure!(ctx.databases_present(&floor_names).await? == n as i64);
    let sql = floor::drop_databases_sql(&floor_names);
    out.floor_drop = floor::psql(server, dir, "drop-dbs.sql", &sql).await?.as_secs_f64();
    ensure!(ctx.databases_present(&floor_names).await? == 0);

    let api_names = Arc::new(names("bd", run, n));
    for create in [true, false] {
        let (a, c, nm) = (ctx.pgplane.api.clone(), ctx.cluster_id.clone(), api_names.clone());
        let since = Utc::now();
        let result = run_count(n, ctx.config.db_concurrency, move |i| {
            let (a, c, nm) = (a.clone(), c.clone(), nm.clone());
            async move {
                if create {
                    a.create_db(&c, &nm[i]).await
                } else {
                    a.delete_db(&c, &nm[i]).await
                }
            }
        })
        .await;
        result.check(if create { "creating databases" } else { "dropping databases" })?;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (p50_ms, p99_ms) = result.p50_p99_ms();
        let phase = DbPhase { secs: result.wall.as_secs_f64(), p50_ms, p99_ms, passes: ctx.passes(since)? };
        let present = ctx.databases_present(&api_names).await?;
        if create {
            ensure!(present == n as i64, "databases missing on the target");
            out.create = phase;
        } else {
            ensure!(present == 0, "dropped databases still on the target");
            out.drop = phase;
        }
    }
    Ok(out)
}
