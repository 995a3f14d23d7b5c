//! Convergence when things go wrong: an unreachable target leaves objects pending with their
//! error and converges once it is back; changes made behind pgplane's back are repaired.

use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_leaves_objects_pending_until_it_is_back() {
    let app =
        TestApp::spawn_with(AppOptions { apply_timeout: Duration::from_secs(2), ..Default::default() }).await;
    let admin = app.target_admin("postgres").await;
    // Lock pgplane's admin role out and end its pooled sessions.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {a} NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{a}'",
            a = app.admin_user
        ))
        .await
        .unwrap();
    let name = app.unique("patient");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "pending");
    let error = body["user"]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("cannot connect") || error.contains("not permitted"), "{error}");
    assert!(!error.contains(&app.admin_password));
    let password = body["user"]["password"].as_str().unwrap().to_string();
    assert!(!app.role_exists(&name).await);
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    assert!(cluster["database"]["pgplane"]["last_error"].is_string(), "{cluster}");

    admin.batch_execute(&format!("ALTER ROLE {} LOGIN", app.admin_user)).await.unwrap();
    let converged = app
        .eventually(Duration::from_secs(40), || async {
            let (_, body) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
            body["user"]["status"] == "ready"
        })
        .await;
    assert!(converged, "the user converged once the target was back");
    assert!(app.target.login(&name, &password, &app.default_db).await.is_ok());
    let (_, body) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert!(body["user"].get("last_error").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_behind_pgplanes_back_are_repaired() {
    let app = TestApp::spawn_with(AppOptions {
        target_major: 17,
        resync_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let name = app.unique("drifter");
    let password = app.create_user(&name).await;
    let db = app.unique("driftdb");
    app.create_db(&db).await;
    let admin = app.target_admin("postgres").await;
    admin.batch_execute(&format!("DROP ROLE {name}")).await.unwrap();
    admin.batch_execute(&format!("DROP DATABASE {db}")).await.unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async {
            app.role_exists(&name).await && app.database_exists(&db).await
        })
        .await;
    assert!(repaired);
    assert!(app.target.login(&name, &password, &app.default_db).await.is_ok(), "same password as before");

    admin.batch_execute(&format!("ALTER ROLE {name} CREATEDB PASSWORD 'changed-by-hand'")).await.unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async {
            app.target_strings("SELECT rolcreatedb::text FROM pg_roles WHERE rolname = $1", &[&name]).await
                == ["false"]
        })
        .await;
    assert!(repaired);
    assert!(app.target.login(&name, &password, &app.default_db).await.is_ok());
    assert!(app.target.login(&name, "changed-by-hand", &app.default_db).await.is_err());
}
