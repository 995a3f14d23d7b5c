//! Scenario 6, replicas: the users workload of scenario 1 (creates on the main cluster, each
//! answered once applied) through three `pgplane serve` processes sharing the metadata DB
//! against through one; and the time from a SIGKILL of the process working on a cluster to
//! that cluster's next applied change.
//!
//! Method. Two more processes are started from the main one (same metadata DB, key and
//! token). The creates go round-robin to the processes; runs through one and through three
//! alternate. For the takeover, a writer keeps creating users on the main cluster through the
//! live processes; the process whose pass over the cluster ended last (from the processes'
//! "reconcile pass finished" events) is taken to be the one working on it, and, if it is one
//! of the two extra processes, is taken out of the writer's list and killed with SIGKILL; the
//! time is from the kill to the end of the first pass that applied a change to the cluster in
//! a surviving process. A new process replaces the killed one before the next kill.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::Utc;

use crate::api::Api;
use crate::ctx::Ctx;
use crate::load::run_count;
use crate::pgplane::Pgplane;

#[derive(Debug, Clone, Default)]
pub struct ReplicasResult {
    pub users: usize,
    /// Seconds to create `users` through one process, run by run.
    pub one_secs: Vec<f64>,
    /// The same through three.
    pub three_secs: Vec<f64>,
    pub one_p99_ms: Vec<f64>,
    pub three_p99_ms: Vec<f64>,
    /// SIGKILL to the cluster's next applied change, ms, kill by kill.
    pub takeover_ms: Vec<f64>,
    /// Writer requests to processes that stayed alive that failed during the kills.
    pub live_failures: usize,
    pub live_requests: usize,
    /// The first of those failures: when it came (ms from the kill before it) and what came back.
    pub first_failure: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<ReplicasResult> {
    let c = &ctx.config;
    let mut extra = vec![ctx.pgplane.replica("replica-2").await?, ctx.pgplane.replica("replica-3").await?];
    let mut out = ReplicasResult { users: c.replica_users, ..ReplicasResult::default() };
    for run in 0..c.replica_rounds.max(1) {
        for three in [false, true] {
            let mut apis = vec![ctx.pgplane.api.clone()];
            if three {
                apis.extend(extra.iter().map(|p| p.api.clone()));
            }
            let (secs, p99) = create_and_delete(ctx, &apis, &format!("r{run}{}", u8::from(three))).await?;
            if three {
                out.three_secs.push(secs);
                out.three_p99_ms.push(p99);
            } else {
                out.one_secs.push(secs);
                out.one_p99_ms.push(p99);
            }
        }
    }

    let live: Arc<Mutex<Vec<Api>>> = Arc::new(Mutex::new(
        std::iter::once(ctx.pgplane.api.clone()).chain(extra.iter().map(|p| p.api.clone())).collect(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last_kill: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let writer =
        tokio::spawn(write_until(ctx.cluster_id.clone(), live.clone(), stop.clone(), last_kill.clone()));
    for kill in 0..c.replica_kills {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = working_on(ctx, &extra).await?;
        let mut killed = extra.remove(victim);
        live.lock().expect("live").retain(|a| a.base != killed.api.base);
        let killed_at = Utc::now();
        *last_kill.lock().expect("kill") = Some(Instant::now());
        killed.kill()?;
        let mut next = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while next.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut ends = Vec::new();
            for p in std::iter::once(&ctx.pgplane).chain(&extra) {
                ends.extend(
                    p.passes_since(killed_at)?
                        .into_iter()
                        .filter(|e| e.cluster_id == ctx.cluster_id && e.changes > 0)
                        .map(|e| e.finished_at),
                );
            }
            next = ends.into_iter().min();
        }
        let Some(next) = next else { bail!("kill {kill}: no change applied within 60 s of the SIGKILL") };
        out.takeover_ms.push((next - killed_at).num_microseconds().unwrap_or(0) as f64 / 1e3);
        let replacement = ctx.pgplane.replica(&format!("replica-k{kill}")).await?;
        live.lock().expect("live").push(replacement.api.clone());
        extra.push(replacement);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (out.live_requests, out.live_failures, out.first_failure) = writer.await?;
    for p in extra {
        p.stop().await?;
    }
    Ok(out)
}

/// Creates `users` users through `apis` (round-robin), then deletes them; returns the seconds
/// the creates took and their p99 in ms.
async fn create_and_delete(ctx: &Ctx, apis: &[Api], tag: &str) -> Result<(f64, f64)> {
    let c = &ctx.config;
    let apis = Arc::new(apis.to_vec());
    let names: Arc<Vec<String>> =
        Arc::new((0..c.replica_users).map(|i| format!("rep_{tag}_{i:04}")).collect());
    let job = |delete: bool| {
        let (apis, names, cluster) = (apis.clone(), names.clone(), ctx.cluster_id.clone());
        move |i: usize| {
            let (api, name, cluster) = (apis[i % apis.len()].clone(), names[i].clone(), cluster.clone());
            async move {
                if delete {
                    api.delete_user(&cluster, &name).await
                } else {
                    api.create_user(&cluster, &name).await
                }
            }
        }
    };
    let created = run_count(names.len(), c.user_concurrency, job(false)).await;
    created.check(&format!("creating users through {} processes", apis.len()))?;
    run_count(names.len(), c.user_concurrency, job(true)).await.check("deleting the users")?;
    Ok((created.wall.as_secs_f64(), created.p50_p99_ms().1))
}

/// Which of `extra` ended the last pass over the main cluster; waits (up to 30 s) while it is
/// the main process, which the other scenarios still need.
async fn working_on(ctx: &Ctx, extra: &[Pgplane]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let since = Utc::now() - chrono::Duration::seconds(2);
        let last = |p: &Pgplane| -> Result<Option<chrono::DateTime<Utc>>> {
            let events = p.passes_since(since)?;
            Ok(events.iter().filter(|e| e.cluster_id == ctx.cluster_id).map(|e| e.finished_at).max())
        };
        let main = last(&ctx.pgplane)?;
        let mut best: Option<(usize, chrono::DateTime<Utc>)> = None;
        for (i, p) in extra.iter().enumerate() {
            if let Some(at) = last(p)? {
                if best.is_none_or(|(_, b)| at > b) {
                    best = Some((i, at));
                }
            }
        }
        if let Some((i, at)) = best {
            if main.is_none_or(|m| at > m) {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no extra process worked on the main cluster for 30 s")
}

/// Creates users on `cluster` through the live processes, 4 at a time, until `stop`; returns
/// the requests sent to processes that stayed alive, how many of them failed, and the first
/// failure (with its time from the last kill, `last_kill`).
async fn write_until(
    cluster: String,
    live: Arc<Mutex<Vec<Api>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    last_kill: Arc<Mutex<Option<Instant>>>,
) -> (usize, usize, Option<String>) {
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (cluster, live, stop, last_kill) =
                (cluster.clone(), live.clone(), stop.clone(), last_kill.clone());
            tokio::spawn(async move {
                let (mut sent, mut failed, mut first) = (0, 0, None);
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let api = {
                        let live = live.lock().expect("live");
                        live[i % live.len()].clone()
                    };
                    let asked = Instant::now();
                    let result = api.create_user(&cluster, &format!("kill_{w}_{i:05}")).await;
                    i += 1;
                    // A request to the process just killed may fail: it is not counted.
                    if live.lock().expect("live").iter().any(|a| a.base == api.base) {
                        sent += 1;
                        if let Err(e) = result {
                            failed += 1;
                            first.get_or_insert_with(|| {
                                let since_kill = last_kill.lock().expect("kill").map(|k| {
                                    format!(
                                        ", sent {:.0} ms after the last kill",
                                        (asked - k).as_secs_f64() * 1e3
                                    )
                                });
                                format!(
                                    "to {} after {:.0} ms{}: {e}",
                                    api.base,
                                    asked.elapsed().as_secs_f64() * 1e3,
                                    since_kill.unwrap_or_default()
                                )
                            });
                        }
                    }
                }
                (sent, failed, first)
            })
        })
        .collect();
    let mut total = (0, 0, None);
    for w in workers {
        if let Ok((s, f, first)) = w.await {
            total = (total.0 + s, total.1 + f, total.2.or(first));
        }
    }
    total
}
