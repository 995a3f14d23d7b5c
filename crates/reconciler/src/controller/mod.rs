//! The reconcile loop: listens for wake-ups from API writes, checks every second for clusters
//! that are due (changed, retry time come, or not looked at for a resync interval), and runs
//! one pass per due cluster, in parallel up to a bound (`slots`), drift checks queued fairly by
//! team. The cluster lock (`Store::try_lock_cluster`, a session-level advisory lock on the
//! metadata DB) makes sure that two pgplane processes never work on the same cluster at once;
//! a process that finds a cluster's lock taken leaves the cluster alone for a moment
//! (`HELD_ELSEWHERE_FOR`).
//! On stop, passes in flight get a grace period to end; those still running then are
//! cancelled at their next await point (passes are idempotent: the next one, here or in
//! another process, observes the target and carries on) and their locks are released by
//! closing the sessions that hold them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgplane_core::credentials::CredentialsCache;
use pgplane_core::heartbeat::Heartbeat;
use pgplane_core::notifications::Event;
use pgplane_core::secrets::Sealer;
use pgplane_core::store::{DueCluster, PassCluster, WAKE_CHANNEL};
use pgplane_core::Store;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

mod slots;

use crate::metrics::Reachability;
use crate::pass::{run_pass, Ended, Hold, PassEnd};
use crate::pools::Pools;
use pgplane_target_server::SessionLimits;
use pgplane_target_server::TargetPolicy;
use slots::Slots;

/// How the reconciler behaves.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// How often every cluster is re-checked for drift even when nothing changed.
    pub resync_interval: Duration,
    /// How many clusters are reconciled at the same time.
    pub max_concurrent_passes: usize,
    /// How many of those one team's clusters may always take (0: half of them, at least one);
    /// beyond it a team borrows free slots but never the last quarter, so that one team's dead
    /// or stalling servers never keep another team's writes waiting (see `slots`).
    pub max_passes_per_team: usize,
    /// statement_timeout and lock_timeout for every session on a target.
    pub session_limits: SessionLimits,
    /// Where targets may be.
    pub target_policy: TargetPolicy,
    /// After a stop, how long passes in flight may run on before they are cancelled.
    pub shutdown_grace: Duration,
    /// Most sessions this process holds on one target server, whatever the number of clusters
    /// it hosts, all sessions counted (idle pooled ones close after `IDLE_SESSION_TIMEOUT`). The
    /// composition root makes the process's budget from it, in `target_policy`.
    pub max_sessions_per_server: usize,
    /// Users of a cluster alone on its server may hold REPLICATION when they ask for it (see
    /// `pgplane_core::powers`); otherwise every pass withholds it.
    pub allow_replication_for_sole_tenants: bool,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            max_concurrent_passes: 8,
            max_passes_per_team: 0,
            session_limits: SessionLimits::default(),
            target_policy: TargetPolicy::default(),
            shutdown_grace: Duration::from_secs(30),
            max_sessions_per_server: pgplane_target_server::policy::DEFAULT_SESSIONS_PER_SERVER,
            allow_replication_for_sole_tenants: false,
        }
    }
}

/// What the reconciler has done so far, for health checks, tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Passes run to the end (successful or not).
    pub passes: AtomicU64,
    /// Steps that issued DDL on a target (create, alter, drop of a role or database).
    pub ddl_steps: AtomicU64,
    /// Passes not run because another session held the cluster's lock (another process at
    /// work on it, or another pass of this one: the loop's, or one `reconcile_now` asked for).
    pub lock_held_elsewhere: AtomicU64,
    /// Beats at each turn of the loop (at least every second).
    pub heartbeat: Arc<Heartbeat>,
}

/// State shared by the loop and its passes.
pub(crate) struct Shared {
    pub store: Store,
    /// The sealer of targets' and users' secrets, with the users' credentials it opened.
    pub credentials: CredentialsCache,
    pub pools: Pools,
    pub config: ReconcilerConfig,
    pub stats: Arc<Stats>,
    in_flight: Mutex<HashSet<Uuid>>,
    /// When each cluster's last pass ended: a due list read before that is stale for it.
    finished_at: Mutex<HashMap<Uuid, Instant>>,
    /// When each cluster whose lock another session held was last found so: the loop leaves
    /// it alone until `HELD_ELSEWHERE_FOR` has passed.
    held_elsewhere: Mutex<HashMap<Uuid, Instant>>,
    /// The pass slots, shared between teams.
    slots: Slots,
    /// Drift-check passes spawned and not ended, per team.
    drift_checks: DriftChecks,
    /// Which targets this process's passes reached, for the metrics.
    reachability: Reachability,
}

impl Shared {
    /// Forgets when passes ended once no due list can be older than that (the map would
    /// otherwise grow with every cluster ever passed over).
    fn forget_old_ends(&self) {
        self.finished_at
            .lock()
            .expect("finished lock")
            .retain(|_, at| at.elapsed() < Duration::from_secs(60));
        self.held_elsewhere
            .lock()
            .expect("held-elsewhere lock")
            .retain(|_, at| at.elapsed() < HELD_ELSEWHERE_FOR);
    }

    /// Until when the loop leaves `cluster_id` alone, if it does: its lock was found held
    /// by another session less than `HELD_ELSEWHERE_FOR` ago.
    fn left_alone_until(&self, cluster_id: &Uuid) -> Option<Instant> {
        let held = self.held_elsewhere.lock().expect("held-elsewhere lock");
        held.get(cluster_id).map(|at| *at + HELD_ELSEWHERE_FOR).filter(|until| *until > Instant::now())
    }
}

/// How long a process leaves a cluster alone after finding its lock held by another session
/// (another process at work on it): wake-ups for it read nothing meanwhile, and the due list
/// is read again once it has passed. Without it, a process that another was keeping out of a
/// busy cluster read the due list and tried the lock again as fast as the metadata database
/// answered (over a thousand times a second, each), taking the cores that the work needed.
/// While the cluster stays due, it is tried again each time this has passed (at most 50 times
/// a second): a process that dies leaves its clusters to the others this much later at most.
const HELD_ELSEWHERE_FOR: Duration = Duration::from_millis(20);

/// How long `Reconciler::reconcile_now` waits for the cluster's lock.
const RECONCILE_NOW_WAIT: Duration = Duration::from_secs(120);

/// How many drift-check passes (due only for their resync) each team has spawned and not yet
/// ended; teams with none are forgotten.
#[derive(Default)]
struct DriftChecks(Mutex<HashMap<Uuid, usize>>);

impl DriftChecks {
    /// Counts one more for `team` unless it already has `most`.
    fn try_start(&self, team: Uuid, most: usize) -> bool {
        let mut counts = self.0.lock().expect("drift checks lock");
        let count = counts.entry(team).or_default();
        let started = *count < most.max(1);
        if started {
            *count += 1;
        }
        started
    }

    fn end(&self, team: Uuid) {
        let mut counts = self.0.lock().expect("drift checks lock");
        if let Some(count) = counts.get_mut(&team) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&team);
            }
        }
    }
}

/// One drift-check pass counted against its team while it lives (until its pass ends, or it is
/// not spawned after all).
struct DriftCheck {
    shared: Arc<Shared>,
    team: Uuid,
}

impl DriftCheck {
    /// Counts one for `team`, unless it has `most` already.
    fn start(shared: &Arc<Shared>, team: Uuid, most: usize) -> Option<Self> {
        shared.drift_checks.try_start(team, most).then(|| DriftCheck { shared: shared.clone(), team })
    }
}

impl Drop for DriftCheck {
    fn drop(&mut self) {
        self.shared.drift_checks.end(self.team);
    }
}

/// The reconciler. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    shared: Arc<Shared>,
}

impl Reconciler {
    pub fn new(store: Store, sealer: Sealer, config: ReconcilerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                credentials: CredentialsCache::new(sealer),
                pools: Pools::new(config.target_policy.budget()),
                stats: Arc::new(Stats::default()),
                in_flight: Mutex::new(HashSet::new()),
                finished_at: Mutex::new(HashMap::new()),
                held_elsewhere: Mutex::new(HashMap::new()),
                slots: Slots::new(config.max_concurrent_passes, config.max_passes_per_team),
                drift_checks: DriftChecks::default(),
                config,
                reachability: Reachability::default(),
            }),
        }
    }

    /// Runs until `shutdown` completes, then waits for passes in flight to finish (up to the
    /// configured grace; the rest are cancelled).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = &self.shared;
        let (max, per_team) = shared.slots.limits();
        if let Err(e) = shared.store.register_process().await {
            tracing::warn!(error = %e, "could not record this process among the deployment's: should it die mid-pass, what it left running on a target is not ended by the next pass");
        }
        // A pass task's end, and whether its pass ran (it may have found the lock taken).
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<bool>();
        let mut passes = tokio::task::JoinSet::new();
        let mut events = shared.store.notifications().subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        // Drift checks from the last due list that their team's share held back, and when that
        // list was read: a pass's end gives its slot to them before the list is read again, so
        // that a drift round over many clusters reads it about once a second, not once a pass.
        let mut backlog: Vec<DueCluster> = Vec::new();
        let mut listed_at = Instant::now();
        // When to read the due list again for a cluster left alone (`HELD_ELSEWHERE_FOR`) that
        // was due or woken meanwhile.
        let mut look_again: Option<Instant> = None;
        tracing::info!(
            resync_interval_s = shared.config.resync_interval.as_secs(),
            max_concurrent_passes = max,
            max_passes_per_team = per_team,
            "reconciler started"
        );
        loop {
            shared.stats.heartbeat.beat();
            shared.reachability.export(shared.config.resync_interval * 2);
            while passes.try_join_next().is_some() {}
            shared.forget_old_ends();
            let read_due_list = tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    shared.pools.close_idle();
                    end_leases(shared).await;
                    true
                }
                // A pass ended: its slot goes to the drift checks already listed, if any. Passes
                // that ended meanwhile count once: one look at the due list serves them all (read
                // once per pass, a burst of ends left a queue that kept the loop reading the list
                // long after the work was done). A pass that did not run (its lock was taken)
                // changed nothing: no look.
                ran = done_rx.recv() => {
                    let mut ends = vec![ran.unwrap_or(false)];
                    while let Ok(more) = done_rx.try_recv() {
                        ends.push(more);
                    }
                    // A cluster whose lock was taken is looked at again once it is no longer
                    // left alone, writes or not: its holder may be gone by then.
                    if ends.contains(&false) {
                        let until = Instant::now() + HELD_ELSEWHERE_FOR;
                        look_again = sooner(look_again, until);
                    }
                    ends.contains(&true) && backlog.is_empty()
                }
                _ = tokio::time::sleep_until(look_again.unwrap_or_else(Instant::now).into()), if look_again.is_some() => {
                    look_again = None;
                    true
                }
                woke = woken(&mut events) => match woke {
                    // Reconnected, or wake-ups were missed: the due list has them.
                    None => true,
                    // A burst of writes sends a wake-up each: those for clusters whose pass is
                    // running need no look at the due list (that pass runs again when it ends,
                    // and its end is a wake-up of its own), nor those for clusters left alone
                    // (looked at again when that ends).
                    Some(clusters) => {
                        let in_flight = shared.in_flight.lock().expect("in-flight lock");
                        let mut any = false;
                        for id in clusters.iter().filter(|id| !in_flight.contains(id)) {
                            match shared.left_alone_until(id) {
                                Some(until) => look_again = sooner(look_again, until),
                                None => any = true,
                            }
                        }
                        if !any {
                            continue;
                        }
                        true
                    }
                }
            };
            let due: Vec<DueCluster> = if read_due_list {
                listed_at = Instant::now();
                match shared.store.due_clusters(shared.config.resync_interval, DUE_LIST_LENGTH).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read due clusters from the metadata database");
                        continue;
                    }
                }
            } else {
                std::mem::take(&mut backlog)
            };
            backlog.clear();
            for due_cluster in due {
                let DueCluster { cluster_id, team_id, changed } = due_cluster;
                if let Some(until) = shared.left_alone_until(&cluster_id) {
                    look_again = sooner(look_again, until);
                    continue;
                }
                // Drift checks queue no deeper than a team's share of the slots, so that a
                // write arriving during a drift round waits for a few passes, not for the round;
                // the others wait in the backlog for a pass to end (or the next due list).
                let drift_check = if changed {
                    None
                } else {
                    match DriftCheck::start(&self.shared, team_id, per_team) {
                        Some(check) => Some(check),
                        None => {
                            backlog.push(due_cluster);
                            continue;
                        }
                    }
                };
                if !shared.in_flight.lock().expect("in-flight lock").insert(cluster_id) {
                    continue;
                }
                // A pass that ended since the due list was read made the list stale for its
                // cluster: running it again would repeat the work for nothing.
                let ended = shared.finished_at.lock().expect("finished lock").get(&cluster_id).copied();
                if ended.is_some_and(|at| at > listed_at) {
                    shared.in_flight.lock().expect("in-flight lock").remove(&cluster_id);
                    continue;
                }
                let shared = self.shared.clone();
                let done_tx = done_tx.clone();
                passes.spawn(async move {
                    let _slot = shared.slots.acquire(team_id).await;
                    let ran = match locked_pass(&shared, cluster_id, false).await {
                        Ok(ran) => ran,
                        Err(e) => {
                            tracing::warn!(cluster.id = %cluster_id, error = %e, "reconcile pass aborted");
                            true
                        }
                    };
                    // In this order: whoever finds the cluster no longer in flight sees when it ended.
                    shared.finished_at.lock().expect("finished lock").insert(cluster_id, Instant::now());
                    shared.in_flight.lock().expect("in-flight lock").remove(&cluster_id);
                    drop(drift_check);
                    let _ = done_tx.send(ran);
                });
            }
        }
        let grace = shared.config.shutdown_grace;
        let drained =
            tokio::time::timeout(grace, async { while passes.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                passes = passes.len(),
                grace_s = grace.as_secs_f64(),
                "passes still running after the shutdown grace period; cancelling them"
            );
            passes.abort_all();
            while passes.join_next().await.is_some() {}
        }
        tracing::info!("reconciler stopped");
    }

    /// The reconciler's counters and heartbeat.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Runs one full pass over one cluster now, drift check included (for tests and admin
    /// commands). While another pass holds the cluster's lock (this process's loop, or another
    /// process), waits for it to end, trying again every `HELD_ELSEWHERE_FOR`, for at most
    /// `RECONCILE_NOW_WAIT` (then 409).
    pub async fn reconcile_now(&self, cluster_id: Uuid) -> Result<(), pgplane_core::Error> {
        let deadline = Instant::now() + RECONCILE_NOW_WAIT;
        while !locked_pass(&self.shared, cluster_id, true).await? {
            if Instant::now() >= deadline {
                return Err(pgplane_core::Error::Conflict(format!(
                    "another pass held the cluster's lock for {} s: try again later",
                    RECONCILE_NOW_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(HELD_ELSEWHERE_FOR).await;
        }
        Ok(())
    }
}

/// Requests the deletion of the leases whose end has come (any replica may; the statement
/// takes each once), so that the passes it wakes drop them.
async fn end_leases(shared: &Shared) {
    match shared.store.end_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(leases = n, "leases ended"),
        Err(e) => tracing::warn!(error = %e, "cannot end leases in the metadata database"),
    }
}

/// The next look at the due list: the one planned, or `until` if that comes first.
fn sooner(planned: Option<Instant>, until: Instant) -> Option<Instant> {
    Some(planned.map_or(until, |at| at.min(until)))
}

/// Waits for a wake-up: writes announced on the wake channel (with those already queued behind
/// the first), or the notification session (re)connected or lagging (a write may have been
/// missed). Returns the clusters woken, None when any may have been. Without notifications it
/// pends forever: the tick polls.
async fn woken(events: &mut broadcast::Receiver<Event>) -> Option<Vec<Uuid>> {
    let mut clusters = Vec::new();
    let mut next = events.recv().await;
    loop {
        match next {
            Ok(Event::Notified { channel, payload }) if channel == WAKE_CHANNEL => {
                clusters.push(Uuid::parse_str(&payload).ok()?);
            }
            Ok(Event::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => return None,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) if clusters.is_empty() => std::future::pending().await,
            Err(broadcast::error::RecvError::Closed) => return Some(clusters),
        }
        next = match events.try_recv() {
            Ok(event) => Ok(event),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(broadcast::error::RecvError::Closed),
            Err(broadcast::error::TryRecvError::Empty) if clusters.is_empty() => events.recv().await,
            Err(broadcast::error::TryRecvError::Empty) => return Some(clusters),
        };
    }
}

/// Most due clusters read at once (changed ones first).
const DUE_LIST_LENGTH: i64 = 256;

/// Most passes one cluster gets in a row before its lock (and its slot among the concurrent
/// passes) goes back.
const PASSES_IN_A_ROW: usize = 32;

/// Runs a pass while holding the cluster's advisory lock on the metadata DB; skips the pass
/// when another session holds it (false), and the loop leaves the cluster alone for
/// `HELD_ELSEWHERE_FOR`. The lock is tied to the session, so it is released even if this
/// process dies mid-pass. While writes keep arriving (a burst of API requests), the next pass
/// starts at once under the same lock, up to `PASSES_IN_A_ROW`, skipping what the first did
/// for the whole hold (`Hold`).
async fn locked_pass(shared: &Shared, cluster_id: Uuid, full: bool) -> Result<bool, pgplane_core::Error> {
    let Some(lock) = shared.store.try_lock_cluster(cluster_id).await? else {
        shared.held_elsewhere.lock().expect("held-elsewhere lock").insert(cluster_id, Instant::now());
        shared.stats.lock_held_elsewhere.fetch_add(1, Ordering::Relaxed);
        return Ok(false);
    };
    shared.held_elsewhere.lock().expect("held-elsewhere lock").remove(&cluster_id);
    let (mut result, mut carried, mut hold) = (Ok(()), None, Hold::default());
    for round in 0..PASSES_IN_A_ROW {
        match bounded_pass(shared, cluster_id, full && round == 0, carried.take(), &mut hold).await {
            Ok(Some(next)) => carried = Some(next),
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    lock.unlock().await;
    result.map(|()| true)
}

/// One pass, bounded in time: a target that stops answering mid-statement (a frozen host, a
/// partition) would hang it, so past the deadline it is abandoned and the pool it used,
/// whose sessions may be stuck, dropped. It starts from `carried` (see [`run_pass`]); returns
/// the cluster the next pass starts from when one is due at once.
async fn bounded_pass(
    shared: &Shared,
    cluster_id: Uuid,
    full: bool,
    carried: Option<Box<PassCluster>>,
    hold: &mut Hold,
) -> Result<Option<Box<PassCluster>>, pgplane_core::Error> {
    let deadline = shared.config.session_limits.statement_timeout * 2 + Duration::from_secs(30);
    let started = Instant::now();
    let result = match tokio::time::timeout(deadline, run_pass(shared, cluster_id, full, carried, hold)).await
    {
        Ok(result) => result,
        Err(_) => {
            shared.pools.discard(cluster_id);
            let message = format!(
                "the pass did not finish within {} s: the target is not answering",
                deadline.as_secs()
            );
            tracing::warn!(cluster.id = %cluster_id, "{message}");
            crate::pass::fail_unfinished(shared, cluster_id, &message).await
        }
    };
    shared.stats.passes.fetch_add(1, Ordering::Relaxed);
    let outcome = match &result {
        Err(_) => "error",
        Ok(ended) => ended.summary.end.label(),
    };
    crate::metrics::pass(outcome, started.elapsed());
    let Ended { summary, next } = result?;
    let reached = summary.end == PassEnd::Reached;
    match summary.end {
        PassEnd::Gone => {
            shared.pools.forget(cluster_id);
            shared.reachability.forget(cluster_id);
        }
        PassEnd::Idle => {}
        PassEnd::Reached | PassEnd::Unreachable => shared.reachability.record(cluster_id, reached),
    }
    // What one pass costs (the benchmarks read this); debug, as it comes every resync interval.
    tracing::debug!(
        cluster.id = %cluster_id,
        users = summary.users,
        databases = summary.databases,
        changes = summary.changes,
        full = summary.full,
        reached,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "reconcile pass finished"
    );
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_checks_queue_no_deeper_than_a_share_per_team() {
        let checks = DriftChecks::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(checks.try_start(a, 2) && checks.try_start(a, 2));
        assert!(!checks.try_start(a, 2), "team a has its share of drift checks in flight");
        assert!(checks.try_start(b, 2), "another team is not held back");
        checks.end(a);
        assert!(checks.try_start(a, 2));
        for _ in 0..2 {
            checks.end(a);
        }
        checks.end(b);
        assert!(checks.0.lock().unwrap().is_empty(), "teams with none are forgotten");
    }

    #[tokio::test]
    async fn a_burst_of_wake_ups_is_read_at_once() {
        let (tx, mut rx) = broadcast::channel(16);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let wake = |id: Uuid| Event::Notified { channel: WAKE_CHANNEL, payload: id.to_string() };
        for event in [wake(a), Event::Notified { channel: "other", payload: String::new() }, wake(b), wake(a)]
        {
            tx.send(event).unwrap();
        }
        assert_eq!(woken(&mut rx).await, Some(vec![a, b, a]), "every queued wake-up, in order");
        tx.send(wake(a)).unwrap();
        tx.send(Event::Connected).unwrap();
        assert_eq!(woken(&mut rx).await, None, "after a reconnection any cluster may be due");
        tx.send(Event::Notified { channel: WAKE_CHANNEL, payload: "not a uuid".into() }).unwrap();
        assert_eq!(woken(&mut rx).await, None);
    }
}
