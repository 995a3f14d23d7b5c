//! Scenario 4, scale: many targets (one cluster each) with hundreds of users each, and the
//! cost of one periodic drift round (every cluster checked once, nothing to repair) as the
//! number of clusters and of objects grows.
//!
//! Method. pgplane runs with a resync interval far longer than the bench, so no drift pass
//! happens on its own. A round over the first N clusters is started the way the resync timer
//! starts one: their `last_resync_at` is moved one day back in the metadata DB, and the
//! reconciler's one-second tick finds them due. The time of the round is taken from
//! pgplane's own "reconcile pass finished" events (first pass start to last pass end); the
//! statements are counted from the servers' logs: statement logging is switched on (ALTER
//! SYSTEM, reload) on the metadata server and the targets for the measurement only, the
//! bench writes a marker statement before and after the round, and the lines logged by the
//! applications `pgplane/…` between the markers are counted (simple-protocol statements and
//! extended-protocol executes; prepares are not logged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use chrono::Utc;

use crate::containers::{count_statements, mark, set_statement_logging, Server};
use crate::ctx::Ctx;
use crate::load::run_count;
use crate::pgplane::{registration, PassEvent};
use crate::stats::Summary;

/// One measured configuration: N clusters with U users each.
#[derive(Debug, Clone, Default)]
pub struct ScalePoint {
    pub clusters: usize,
    pub users_per_cluster: usize,
    /// Users and databases pgplane manages on those clusters (users + primary + default db).
    pub objects: usize,
    pub round_ms: Vec<f64>,
    pub pass_ms: Vec<f64>,
    pub target_statements_per_pass: Vec<f64>,
    pub metadata_statements_per_pass: Vec<f64>,
    /// `due_clusters` polls of the reconcile loop during the round.
    pub loop_polls: Vec<f64>,
    /// Passes beyond one per cluster in a round (a cluster checked twice).
    pub extra_passes: Vec<f64>,
}

/// Adding users to every scale cluster through the API.
#[derive(Debug, Clone, Copy)]
pub struct Populate {
    pub users_per_cluster: usize,
    pub added: usize,
    pub secs: f64,
}

#[derive(Debug, Clone, Default)]
pub struct ScaleResult {
    pub targets: usize,
    pub points: Vec<ScalePoint>,
    pub populate: Vec<Populate>,
    pub peak_kib: u64,
}

pub async fn run(ctx: &Ctx, servers: &[Server]) -> Result<ScaleResult> {
    let api = &ctx.pgplane.api;
    let mut ids = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        ids.push(api.register(registration(&format!("scale-{:02}", i + 1), &server.pg)).await?);
    }
    ctx.pgplane.reset_peak();
    let ids = Arc::new(ids);
    let mut out = ScaleResult { targets: servers.len(), ..ScaleResult::default() };
    let mut users_so_far = 0;
    let mut user_steps = ctx.config.scale_users.clone();
    user_steps.sort_unstable();
    for users in user_steps {
        let add = users.saturating_sub(users_so_far);
        let k = ids.len();
        let (a, ids2) = (api.clone(), ids.clone());
        let t = Instant::now();
        let result = run_count(add * k, ctx.config.user_concurrency, move |i| {
            let (a, ids2) = (a.clone(), ids2.clone());
            async move {
                let name = format!("s{:04}", users_so_far + i / k);
                a.create_user(&ids2[i % k], &name).await
            }
        })
        .await;
        result.check("adding users to the scale clusters")?;
        out.populate.push(Populate {
            users_per_cluster: users,
            added: add * k,
            secs: t.elapsed().as_secs_f64(),
        });
        users_so_far = users;
        settle(ctx, &ids).await?;

        set_statement_logging(&ctx.meta, true).await?;
        for s in servers {
            set_statement_logging(s, true).await?;
        }
        for &n in &ctx.config.scale_clusters {
            let n = n.min(ids.len());
            let mut point = ScalePoint {
                clusters: n,
                users_per_cluster: users,
                objects: n * (users + 2),
                ..ScalePoint::default()
            };
            for repeat in 0..ctx.config.scale_repeats {
                let tag = format!("{n}x{users}r{repeat}");
                round(ctx, &servers[..n], &ids[..n], &tag, &mut point).await?;
            }
            out.points.push(point);
        }
        set_statement_logging(&ctx.meta, false).await?;
        for s in servers {
            set_statement_logging(s, false).await?;
        }
    }
    out.peak_kib = ctx.pgplane.memory()?.hwm_kib;
    Ok(out)
}

/// Waits until every scale cluster has converged and the reconciler is idle.
async fn settle(ctx: &Ctx, ids: &[String]) -> Result<()> {
    ctx.converged(ids, "the scale clusters", Duration::from_secs(120), Duration::from_millis(200)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

/// One drift round over `ids` (the clusters of `servers`).
async fn round(
    ctx: &Ctx,
    servers: &[Server],
    ids: &[String],
    tag: &str,
    point: &mut ScalePoint,
) -> Result<()> {
    let (begin, end) = (format!("{tag}-begin"), format!("{tag}-end"));
    mark(&ctx.meta, &begin).await?;
    for s in servers {
        mark(s, &begin).await?;
    }
    let meta = ctx.meta.session("pgplane").await?;
    let poked_at = Utc::now();
    meta.execute(
        "UPDATE clusters SET last_resync_at = now() - interval '1 day'
          WHERE cluster_id::text = ANY($1)",
        &[&ids],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = meta
            .query_one(
                "SELECT count(*) FROM clusters WHERE cluster_id::text = ANY($1)
                    AND last_reconciled_at >= $2::text::timestamptz",
                &[&ids, &poked_at.to_rfc3339()],
            )
            .await?;
        if row.get::<_, i64>(0) == ids.len() as i64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the drift round {tag} did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each pass logs its end right after recording it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    mark(&ctx.meta, &end).await?;
    for s in servers {
        mark(s, &end).await?;
    }

    let events: Vec<PassEvent> =
        ctx.pgplane.passes_since(poked_at)?.into_iter().filter(|e| ids.contains(&e.cluster_id)).collect();
    let checked: std::collections::HashSet<&str> = events.iter().map(|e| e.cluster_id.as_str()).collect();
    ensure!(
        checked.len() == ids.len(),
        "round {tag}: passes over {} of {} clusters",
        checked.len(),
        ids.len()
    );
    point.extra_passes.push((events.len() - ids.len()) as f64);
    ensure!(
        events.iter().all(|e| e.changes == 0),
        "round {tag}: a drift pass changed something on a converged target"
    );
    let users = point.users_per_cluster as u64 + 1;
    ensure!(
        events.iter().all(|e| e.users == users && e.databases == 1),
        "round {tag}: a pass did not see {users} users and 1 database"
    );
    let first = events.iter().map(PassEvent::started_at).min().expect("events");
    let last = events.iter().map(|e| e.finished_at).max().expect("events");
    point.round_ms.push((last - first).num_microseconds().unwrap_or(0) as f64 / 1e3);
    let elapsed: Vec<f64> = events.iter().map(|e| e.elapsed_ms).collect();
    point.pass_ms.push(Summary::of(&elapsed).median);

    let mut target_statements = 0;
    for s in servers {
        target_statements += count_statements(&s.log(), &begin, &end, "pgplane", "")?.total;
    }
    let meta_count =
        count_statements(&ctx.meta.log(), &begin, &end, "pgplane", "select cluster_id from clusters")?;
    let n = events.len() as f64;
    point.target_statements_per_pass.push(target_statements as f64 / n);
    point.metadata_statements_per_pass.push((meta_count.total - meta_count.matching) as f64 / n);
    point.loop_polls.push(meta_count.matching as f64);
    Ok(())
}
