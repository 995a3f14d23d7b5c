//! Attacks that reach for server-wide powers: REPLICATION (a base backup), other teams'
//! databases through PUBLIC's CONNECT, and a session held on `template1`.

use std::time::Duration;

use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::Rival;
use crate::{on_each_version, sqlstate};

/// Whether `user` can log in to `database` (a refusal must be for lack of CONNECT, 42501).
async fn connects(app: &TestApp, user: &str, password: &str, database: &str) -> bool {
    match app.target.login(user, password, database).await {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(sqlstate(&e), "42501", "{user} on {database}: {e}");
            false
        }
    }
}

async fn other_teams_cannot_connect_to_a_teams_databases(major: u32) {
    let app = TestApp::spawn(major).await;
    let before = app.unique("before");
    app.create_db(&before).await;
    let plain = app.unique("plain");
    let plain_password = app.create_user(&plain).await;
    let reader = app.unique("reader");
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({ "name": reader, "access": [{ "database": before, "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let reader_password = body["user"]["password"].as_str().unwrap().to_string();
    let primary_password = app.primary_password().await;

    // A second team registers on the server: team A's cluster is woken and closes its
    // databases, those that existed before included.
    let rival = Rival::register(&app, "rival").await;
    let (status, body) = rival
        .call(&app, Method::POST, &rival.path("/users"), Some(json!({ "name": app.unique("rival_user") })))
        .await;
    assert_eq!(status, 201, "{body}");
    let rival_user = body["user"]["name"].as_str().unwrap().to_string();
    let rival_password = body["user"]["password"].as_str().unwrap().to_string();
    let closed = app
        .eventually(Duration::from_secs(20), || async {
            !connects(&app, &rival_user, &rival_password, &before).await
                && !connects(&app, &rival_user, &rival_password, &app.default_db).await
        })
        .await;
    assert!(closed, "team A's databases are closed once the server is shared");
    let after = app.unique("after");
    app.create_db(&after).await;
    let late = app.unique("late");
    let late_password = app.create_user(&late).await;

    for database in [&app.default_db, &before, &after] {
        for (user, password) in
            [(&rival.primary_user, &rival.primary_password), (&rival_user, &rival_password)]
        {
            assert!(!connects(&app, user, password, database).await, "{user} reached {database}");
        }
        for (user, password) in [
            (&app.primary_user, &primary_password),
            (&plain, &plain_password),
            (&reader, &reader_password),
            (&late, &late_password),
        ] {
            assert!(connects(&app, user, password, database).await, "{user} shut out of {database}");
        }
    }
    // Team A's users are as shut out of the rival's databases.
    assert!(!connects(&app, &plain, &plain_password, &rival.default_db).await);
    assert!(connects(&app, &rival_user, &rival_password, &rival.default_db).await);

    // PUBLIC's CONNECT granted back by hand is drift, revoked by the next pass.
    app.target_admin("postgres")
        .await
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {} TO PUBLIC",
            pgplane_target::sql::ident(&before)
        ))
        .await
        .unwrap();
    assert!(connects(&app, &rival_user, &rival_password, &before).await);
    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    assert!(!connects(&app, &rival_user, &rival_password, &before).await);
    let drift = app.store.list_drift(cluster, 50).await.unwrap();
    assert!(
        drift.iter().any(|d| d.name == before && d.description.contains("PUBLIC") && d.repaired_at.is_some()),
        "{drift:?}"
    );
}
on_each_version!(other_teams_cannot_connect_to_a_teams_databases);

async fn a_session_held_on_template1_blocks_no_create_database(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    let held = rival.session(&app, "template1").await;
    held.batch_execute("SELECT 1").await.unwrap();
    let name = app.unique("fresh");
    let (status, body) = app.post(&app.cluster_path("/dbs"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["db"].get("status"), None, "ready at once: {body}");
    assert!(app.database_exists(&name).await);
    let encoding = app
        .target_strings(
            "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate FROM pg_database WHERE datname = $1
             UNION ALL
             SELECT pg_encoding_to_char(encoding) || ' ' || datcollate FROM pg_database WHERE datname = 'template1'",
            &[&name],
        )
        .await;
    assert_eq!(encoding[0], encoding[1], "the server's defaults");
    held.batch_execute("SELECT 1").await.expect("the rival's session was left alone");
}
on_each_version!(a_session_held_on_template1_blocks_no_create_database);
