//! The reconciler's Prometheus metrics: passes and their duration, DDL statements by kind, drift
//! found and repaired, and how many targets this process last reached or failed to reach.
//! Labels are fixed words (step kinds, object kinds, outcomes): never a cluster id, a name or a
//! user. Without an installed recorder (tests, the client commands) every call is a no-op.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use uuid::Uuid;

pub const PASSES: &str = "pgplane_reconcile_passes_total";
pub const PASS_DURATION: &str = "pgplane_reconcile_pass_duration_seconds";
pub const DDL: &str = "pgplane_ddl_statements_total";
pub const DRIFT_FOUND: &str = "pgplane_drift_found_total";
pub const DRIFT_REPAIRED: &str = "pgplane_drift_repaired_total";
pub const TARGETS: &str = "pgplane_targets";

/// Describes the reconciler's metrics to the installed recorder (their HELP lines).
pub fn describe() {
    describe_counter!(
        PASSES,
        "Reconcile passes run by this process, by result (reached, unreachable, idle, gone, error)"
    );
    describe_histogram!(PASS_DURATION, Unit::Seconds, "Duration of one reconcile pass");
    describe_counter!(DDL, "DDL steps issued on targets, by kind of step and result (ok, failed)");
    describe_counter!(DRIFT_FOUND, "Changes made behind pgplane's back that a pass found, by object kind");
    describe_counter!(DRIFT_REPAIRED, "Drift that the pass which found it repaired, by object kind");
    describe_gauge!(
        TARGETS,
        "Targets by whether this process's last pass over them (within two resync intervals) reached them"
    );
}

/// Counts one pass and its duration.
pub(crate) fn pass(result: &'static str, elapsed: Duration) {
    counter!(PASSES, "result" => result).increment(1);
    histogram!(PASS_DURATION).record(elapsed.as_secs_f64());
}

/// Counts one DDL step issued on a target.
pub(crate) fn ddl(kind: &'static str, ok: bool) {
    counter!(DDL, "kind" => kind, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// Counts drift found, and repaired when the pass fixed it.
pub(crate) fn drift(object: &'static str, repaired: bool) {
    counter!(DRIFT_FOUND, "object" => object).increment(1);
    if repaired {
        counter!(DRIFT_REPAIRED, "object" => object).increment(1);
    }
}

/// Whether each cluster's target was reached by this process's last pass over it, and when.
/// Clusters that another process has taken over (or that are gone) age out.
#[derive(Default)]
pub(crate) struct Reachability {
    last: Mutex<HashMap<Uuid, (bool, Instant)>>,
}

impl Reachability {
    pub fn record(&self, cluster_id: Uuid, reached: bool) {
        self.last.lock().expect("reachability lock").insert(cluster_id, (reached, Instant::now()));
    }

    pub fn forget(&self, cluster_id: Uuid) {
        self.last.lock().expect("reachability lock").remove(&cluster_id);
    }

    /// Drops entries older than `max_age` and sets the gauges from the rest.
    pub fn export(&self, max_age: Duration) {
        let (mut reachable, mut unreachable) = (0u32, 0u32);
        {
            let mut last = self.last.lock().expect("reachability lock");
            last.retain(|_, (_, at)| at.elapsed() <= max_age);
            for (reached, _) in last.values() {
                if *reached {
                    reachable += 1;
                } else {
                    unreachable += 1;
                }
            }
        }
        gauge!(TARGETS, "state" => "reachable").set(reachable);
        gauge!(TARGETS, "state" => "unreachable").set(unreachable);
    }
}
