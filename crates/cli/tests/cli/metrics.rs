//! `/metrics` of a real `pgplane serve`: on its own listener only, parsed by Prometheus's own
//! Python parser and by `promtool check metrics`, with counters that move when API work is
//! done and labels that carry route templates, never raw paths or names. Also checks the
//! alert rules in deploy/ with `promtool check rules` and that the Grafana dashboard queries
//! only metrics pgplane exports.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{promtool, workspace_root, Replica, Secrets};
use pgplane_testkit::python;
use pgplane_testkit::{AppOptions, TestApp};
use serde_json::{json, Value};

/// One sample: metric name (with _total, _bucket, ... as exposed), labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the text format with `prometheus_client.parser` (Prometheus's Python client).
fn parse(text: &str) -> Vec<Sample> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Prometheus parser");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let output = child.wait_with_output().expect("parser output");
    assert!(
        output.status.success(),
        "the parser refused /metrics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("parser JSON");
    parsed
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().expect("name").to_string(),
            labels: serde_json::from_value(s["labels"].clone()).expect("labels"),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(replica: &Replica) -> String {
    let response =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", replica.metrics_port)).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_apart_from_the_api_and_move_with_work() {
    let mut app =
        TestApp::spawn_with(AppOptions { register: false, reconciler: false, ..Default::default() }).await;
    let secrets = Secrets::of(&app);
    // A short resync interval, so that a full pass finds the drift below soon.
    let replica = Replica::start("metrics", &secrets, &["--resync-interval", "2"]).await;
    app.base_url = replica.base_url.clone();
    app.register().await;

    // Not on the API listener, with or without a token.
    let (status, _) = app.get("/metrics").await;
    assert_eq!(status, 404, "/metrics is not served to API clients");

    let before = parse(&scrape(&replica).await);
    let build = before.iter().find(|s| s.name == "pgplane_build_info").expect("build info");
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));

    let user = app.unique("metrics_user");
    app.create_user(&user).await;
    let (status, _) = app.post(&app.cluster_path(&format!("/users/{user}/reset_auth")), json!({})).await;
    assert_eq!(status, 200);
    app.create_db(&app.unique("metrics_db")).await;
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{user}"))).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&app.cluster_path("/users/nobody")).await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/no/such/path").await;
    assert_eq!(status, 404);
    // Drift: a role dropped behind pgplane's back, found and put back by a full pass.
    let kept = app.unique("metrics_kept");
    app.create_user(&kept).await;
    app.target_admin("postgres").await.batch_execute(&format!("DROP ROLE \"{kept}\"")).await.unwrap();

    let users = "/v2/databases/{database_cluster_uuid}/users";
    let user_path = "/v2/databases/{database_cluster_uuid}/users/{username}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = parse(&scrape(&replica).await);
        if sum(&now, "pgplane_drift_repaired_total", &[("object", "user")]) >= 1.0 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped role is counted as drift found and repaired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(sum(&after, "pgplane_drift_found_total", &[("object", "user")]) >= 1.0);

    let requests =
        |samples: &[Sample], labels: &[(&str, &str)]| sum(samples, "pgplane_http_requests_total", labels);
    let grew = |labels: &[(&str, &str)], by: f64| requests(&after, labels) - requests(&before, labels) >= by;
    assert!(grew(&[("route", users), ("method", "POST"), ("status", "201")], 2.0));
    assert!(grew(&[("route", user_path), ("method", "DELETE"), ("status", "204")], 1.0));
    assert!(grew(&[("route", user_path), ("method", "GET"), ("status", "404")], 1.0));
    // /metrics on the API listener and /no/such/path.
    assert_eq!(
        requests(&after, &[("route", "unmatched"), ("status", "404")]),
        2.0,
        "unknown paths share one label"
    );
    assert!(
        sum(&after, "pgplane_http_request_duration_seconds_count", &[("route", users), ("method", "POST")])
            >= 2.0,
        "latency histogram"
    );
    assert!(
        sum(&after, "pgplane_http_request_duration_seconds_bucket", &[("route", users), ("le", "+Inf")])
            >= 2.0
    );
    let ddl =
        |samples: &[Sample], kind: &str| sum(samples, "pgplane_ddl_statements_total", &[("kind", kind)]);
    for kind in ["create_role", "alter_role", "drop_role", "create_database"] {
        assert!(ddl(&after, kind) > ddl(&before, kind), "DDL of kind {kind} counted");
    }
    let passes =
        |samples: &[Sample]| sum(samples, "pgplane_reconcile_passes_total", &[("result", "reached")]);
    assert!(passes(&after) > passes(&before), "passes counted");
    assert!(sum(&after, "pgplane_reconcile_pass_duration_seconds_count", &[]) >= passes(&after));
    assert!(
        sum(&after, "pgplane_token_cache_hits_total", &[])
            > sum(&before, "pgplane_token_cache_hits_total", &[])
    );
    assert!(sum(&after, "pgplane_token_cache_misses_total", &[]) >= 1.0, "the first use of the token missed");
    assert_eq!(sum(&after, "pgplane_targets", &[("state", "reachable")]), 1.0);
    assert_eq!(sum(&after, "pgplane_targets", &[("state", "unreachable")]), 0.0);
    for state in ["pending", "failed", "conflict"] {
        assert!(
            after.iter().any(|s| s.name == "pgplane_objects" && s.labels["state"] == state),
            "objects {state} exported"
        );
    }
    assert!(after.iter().any(|s| s.name == "pgplane_users_expired"), "expired users exported");
    assert!(
        after.iter().any(|s| s.name == "pgplane_users_expiring" && s.labels["window"] == "24h"),
        "users expiring within a day exported"
    );

    // Bounded labels only: no raw path, no user or database name, no cluster id anywhere.
    let text = scrape(&replica).await;
    for secret_ish in [user.as_str(), kept.as_str(), app.cluster_id.as_str(), "nobody", "/no/such/path"] {
        assert!(!text.contains(secret_ish), "{secret_ish:?} appears in /metrics");
    }
    let routes: BTreeSet<&str> =
        after.iter().filter_map(|s| s.labels.get("route").map(String::as_str)).collect();
    assert!(routes.iter().all(|r| *r == "unmatched" || r.starts_with('/')), "{routes:?}");

    // Prometheus's own checker accepts the format and finds nothing to lint.
    let mut check = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_the_dashboard_uses_exported_metrics() {
    let rules = workspace_root().join("deploy/prometheus/alerts.yml");
    let output = promtool().args(["check", "rules"]).arg(&rules).output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let exported = [
        "pgplane_http_requests_total",
        "pgplane_http_request_duration_seconds_bucket",
        "pgplane_reconcile_passes_total",
        "pgplane_reconcile_pass_duration_seconds_bucket",
        "pgplane_ddl_statements_total",
        "pgplane_drift_found_total",
        "pgplane_drift_repaired_total",
        "pgplane_targets",
        "pgplane_objects",
        "pgplane_token_cache_hits_total",
        "pgplane_token_cache_misses_total",
        "pgplane_build_info",
    ];
    let uses = |text: &str| -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for (i, _) in text.match_indices("pgplane_") {
            let name: String =
                text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
        found
    };
    let dashboard = std::fs::read_to_string(workspace_root().join("deploy/grafana/pgplane.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 8), "the dashboard has its panels");
    let alerts = std::fs::read_to_string(&rules).unwrap();
    for (what, text) in [("dashboard", &dashboard), ("alert rules", &alerts)] {
        let used = uses(text);
        let unknown: Vec<_> = used.iter().filter(|m| !exported.contains(&m.as_str())).collect();
        assert!(unknown.is_empty(), "the {what} query metrics pgplane does not export: {unknown:?}");
    }
    let used = uses(&dashboard);
    let unused: Vec<_> = exported.iter().filter(|m| !used.contains(**m)).collect();
    assert!(unused.is_empty(), "the dashboard shows every metric: {unused:?} missing");
}
