//! Outages: a target stopped in the middle of a batch of creates, and the metadata database
//! restarted under a running pgplane. Requests are still answered, nothing is lost or
//! duplicated, and everything converges once the server is back. Each test has servers of its
//! own, so that stopping them disturbs no other test.

use std::time::Duration;

use pgplane_testkit::{AppOptions, OwnServer, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_stopped_mid_batch_converges_once_it_is_back() {
    let target = OwnServer::start(15).await;
    let app = TestApp::spawn_with(AppOptions {
        target_server: Some(target.server.clone()),
        apply_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let names: Vec<String> = (0..24).map(|i| app.unique(&format!("batch{i}"))).collect();
    let path = app.cluster_path("/users");
    let (first, later) = names.split_at(12);
    let creates = futures::future::join_all(first.iter().map(|n| app.post(&path, json!({ "name": n }))));
    let outage = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        target.stop().await;
    };
    let (answers, ()) = tokio::join!(creates, outage);
    for (status, body) in &answers {
        assert_eq!(*status, 201, "accepted whatever happened on the target: {body}");
    }
    // While the target is down, requests are still accepted and answered pending.
    for name in later {
        let (status, body) = app.post(&path, json!({ "name": name })).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["user"]["status"], "pending", "{body}");
        assert!(body["user"]["last_error"].is_string(), "{body}");
    }
    target.start_again().await;
    let converged = app
        .eventually(Duration::from_secs(60), || async {
            let (_, body) = app.get(&path).await;
            let users = body["users"].as_array().cloned().unwrap_or_default();
            users.len() == 25 && users.iter().all(|u| u["status"] == "ready")
        })
        .await;
    assert!(converged, "every user converged after the outage");
    let (_, body) = app.get(&path).await;
    for user in body["users"].as_array().unwrap() {
        let name = user["name"].as_str().unwrap();
        let found =
            app.target_strings("SELECT rolname::text FROM pg_roles WHERE rolname = $1", &[&name]).await;
        assert_eq!(found.len(), 1, "{name} exists exactly once");
        let password = user["password"].as_str().unwrap();
        assert!(app.target.login(name, password, &app.default_db).await.is_ok(), "{name} logs in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_metadata_database_means_503_then_recovery() {
    let metadata = OwnServer::start(15).await;
    let app = TestApp::spawn_with(AppOptions {
        metadata_server: Some(metadata.server.clone()),
        ..Default::default()
    })
    .await;
    let ready = || async {
        let response = app.http.get(format!("{}/readyz", app.base_url)).send().await.unwrap();
        (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(ready().await.0, 200);

    metadata.stop().await;
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["metadata_database"], "unreachable");
    let (status, body) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["id"], "service_unavailable");
    assert!(body["request_id"].is_string());

    metadata.start_again().await;
    let recovered = app.eventually(Duration::from_secs(30), || async { ready().await.0 == 200 }).await;
    assert!(recovered, "/readyz recovers by itself");
    let name = app.unique("after");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "the reconciler works again: {body}");
    assert!(app.role_exists(&name).await);
}
