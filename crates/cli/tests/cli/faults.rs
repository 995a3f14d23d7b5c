//! `pgplane serve` killed with SIGKILL in the middle of a batch: after a restart everything
//! converges, nothing is duplicated and nothing is lost. The gateway runs in the test; the
//! reconciler runs as a real `pgplane serve --no-gateway` process, which the test kills.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

fn reconciler_process(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pgplane"))
        .args(["serve", "--no-gateway", "--resync-interval", "2"])
        .env("PGPLANE_DATABASE_URL", &app.metadata_url)
        .env("PGPLANE_SECRET_KEY", &app.secret_key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgplane serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciler_killed_mid_batch_converges_after_a_restart() {
    let mut app = TestApp::spawn_with(AppOptions {
        register: false,
        reconciler: false,
        apply_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut process = reconciler_process(&app);
    app.register().await;

    let names: Vec<String> = (0..40).map(|i| app.unique(&format!("killed{i}"))).collect();
    let path = app.cluster_path("/users");
    let creates = futures::future::join_all(names.iter().map(|n| app.post(&path, json!({ "name": n }))));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        process.kill().expect("SIGKILL");
        process.wait().expect("reap");
    };
    let (answers, ()) = tokio::join!(creates, kill);
    assert!(answers.iter().all(|(status, _)| *status == 201), "every create is accepted");
    let pending = answers.iter().filter(|(_, b)| b["user"]["status"] == "pending").count();

    let mut restarted = reconciler_process(&app);
    let converged = app
        .eventually(Duration::from_secs(60), || async {
            let (_, body) = app.get(&path).await;
            let users = body["users"].as_array().cloned().unwrap_or_default();
            users.len() == 41 && users.iter().all(|u| u["status"] == "ready")
        })
        .await;
    restarted.kill().ok();
    restarted.wait().ok();
    assert!(converged, "all 40 users converged after the restart ({pending} were pending after the kill)");
    let count = app
        .target_strings(
            "SELECT count(*)::text FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("killed%_{}", app.suffix)],
        )
        .await;
    assert_eq!(count, ["40"], "nothing duplicated, nothing lost");
    for (status, body) in answers {
        assert_eq!(status, 201);
        let name = body["user"]["name"].as_str().unwrap();
        let password = body["user"]["password"].as_str().unwrap();
        assert!(app.target.login(name, password, &app.default_db).await.is_ok(), "{name}");
    }
}
