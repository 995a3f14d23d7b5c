//! Outages: a target stopped in the middle of a batch of creates, and the metadata database
//! restarted under a running pgplane. Requests are still answered, nothing is lost or
//! duplicated, and everything converges once the server is back. Each test has servers of its
//! own, so that stopping them disturbs no other test.

use std::time::Duration;

use pgplane_testkit::{AppOptions, OwnServer, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_stopped_mid_batch_converges_once_it_is_back() {
    if !pgplane_testkit::own_containers() {
        return;
    }
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
    if !pgplane_testkit::own_containers() {
        return;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_target_does_not_slow_the_others() {
    if !pgplane_testkit::own_containers() {
        return;
    }
    let stopped = OwnServer::start(17).await;
    let app =
        TestApp::spawn_with(AppOptions { apply_timeout: Duration::from_secs(3), ..Default::default() }).await;
    // A second cluster on a server of its own, which then goes away.
    let mut body = app.registration(&format!("gone-{}", app.suffix));
    body["pgplane"]["host"] = json!(stopped.server.host);
    body["pgplane"]["port"] = json!(stopped.server.port);
    body["pgplane"]["user"] = json!(stopped.server.user);
    body["pgplane"]["password"] = json!(stopped.server.password);
    let (status, gone) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{gone}");
    let gone_id = gone["database"]["id"].as_str().unwrap().to_string();
    stopped.stop().await;
    let names: Vec<String> = (0..5).map(|i| app.unique(&format!("waiting{i}"))).collect();
    for name in &names {
        let (status, body) =
            app.post(&format!("/v2/databases/{gone_id}/users"), json!({ "name": name })).await;
        assert_eq!((status, body["user"]["status"].as_str()), (201, Some("pending")), "{body}");
    }
    // Meanwhile the healthy cluster answers as usual: ready, not pending behind the other.
    for i in 0..5 {
        let name = app.unique(&format!("healthy{i}"));
        let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
        assert_eq!((status, body["user"]["status"].as_str()), (201, Some("ready")), "{body}");
        assert!(app.role_exists(&name).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_across_clusters_converge_to_the_final_desired_state() {
    let app = TestApp::spawn(15).await;
    // (cluster id, its default database: on a shared server, only its own users connect there)
    let mut clusters = vec![(app.cluster_id.clone(), app.default_db.clone())];
    for i in 0..2 {
        let mut body = app.registration(&format!("storm{i}-{}", app.suffix));
        let default_db = app.unique(&format!("storm{i}db"));
        body["pgplane"]["primary_user"] = json!(app.unique(&format!("storm{i}_admin")));
        body["pgplane"]["default_database"] = json!(default_db);
        let (status, cluster) = app.post("/v2/databases", body).await;
        assert_eq!(status, 201, "{cluster}");
        clusters.push((cluster["database"]["id"].as_str().unwrap().to_string(), default_db));
    }
    // Per cluster: create 6 users, reset the even ones, delete every third; all interleaved.
    let mut operations = Vec::new();
    for (c, (id, db)) in clusters.iter().enumerate() {
        for u in 0..6 {
            operations.push((id.clone(), db.clone(), app.unique(&format!("s{c}u{u}")), u));
        }
    }
    let app = &app;
    let storm = operations.iter().map(|(id, _, name, u)| async move {
        let users = format!("/v2/databases/{id}/users");
        let (status, _) = app.post(&users, json!({ "name": name })).await;
        assert_eq!(status, 201);
        if u % 2 == 0 {
            let (status, _) = app.post(&format!("{users}/{name}/reset_auth"), json!({})).await;
            assert_eq!(status, 200);
        }
        if u % 3 == 0 {
            let (status, _) = app.delete(&format!("{users}/{name}")).await;
            assert_eq!(status, 204);
        }
    });
    futures::future::join_all(storm).await;
    for (id, db, name, u) in &operations {
        let (status, body) = app.get(&format!("/v2/databases/{id}/users/{name}")).await;
        if u % 3 == 0 {
            assert_eq!(status, 404, "{name} was deleted");
            assert!(!app.role_exists(name).await, "{name} is gone from the target");
        } else {
            assert_eq!(body["user"]["status"], "ready", "{body}");
            let password = body["user"]["password"].as_str().unwrap();
            assert!(app.target.login(name, password, db).await.is_ok(), "{name}: the final password");
        }
    }
}
