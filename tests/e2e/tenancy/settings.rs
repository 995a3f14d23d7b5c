//! Attacks through users' settings (connection limits and session parameters): a parameter set
//! in another team's database, on another team's user, or one that reaches beyond the user's
//! own sessions (session_authorization, role, superuser-only parameters), and values that try
//! to smuggle SQL.

use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::json;

use super::Rival;
use crate::on_each_version;

/// How many parameter settings exist on the target for `role` (every database), and in
/// `database` for anyone.
async fn settings_count(app: &TestApp, role: &str, database: &str) -> (String, String) {
    let by_role = app
        .target_strings(
            "SELECT count(*)::text FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
              WHERE r.rolname = $1",
            &[&role],
        )
        .await;
    let in_database = app
        .target_strings(
            "SELECT count(*)::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
              WHERE d.datname = $1",
            &[&database],
        )
        .await;
    (by_role[0].clone(), in_database[0].clone())
}

async fn settings_stay_within_the_teams_users_and_databases(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    let mine = app.unique("mine");
    app.create_user(&mine).await;
    let in_db = |db: &str| json!({"settings": {"parameters": [{"name": "work_mem", "value": "4MB", "database": db}]}});

    // My user, the rival's database: the rival's database is not one of my cluster's.
    let (status, body) =
        app.put(&app.cluster_path(&format!("/users/{mine}")), in_db(&rival.default_db)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("unknown database"), "{body}");

    // The rival on my user: through my cluster (not theirs to name) or through theirs (no such
    // user there).
    let theirs = in_db(&rival.default_db);
    let (status, _) = rival
        .call(&app, Method::PUT, &app.cluster_path(&format!("/users/{mine}")), Some(theirs.clone()))
        .await;
    assert_eq!(status, 404);
    let (status, _) =
        rival.call(&app, Method::PUT, &rival.path(&format!("/users/{mine}")), Some(theirs)).await;
    assert_eq!(status, 404);
    // Nor on my primary user, nor in my default database.
    let (status, _) = rival
        .call(
            &app,
            Method::PUT,
            &rival.path(&format!("/users/{}", app.primary_user)),
            Some(in_db(&app.default_db)),
        )
        .await;
    assert_eq!(status, 404);
    let rival_user = app.unique("rivals");
    let (status, body) =
        rival.call(&app, Method::POST, &rival.path("/users"), Some(json!({"name": rival_user}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = rival
        .call(&app, Method::PUT, &rival.path(&format!("/users/{rival_user}")), Some(in_db(&app.default_db)))
        .await;
    assert_eq!(status, 422, "{body}");

    // Parameters that reach beyond a user's own sessions, or smuggle SQL, are not settable.
    for (name, value) in [
        ("session_authorization", "postgres"),
        ("role", "postgres"),
        ("log_statement", "none"),
        ("statement_timeout", "0'; ALTER ROLE postgres NOLOGIN; --"),
        ("search_path", "public\"; ALTER ROLE postgres NOLOGIN; --"),
    ] {
        let body = json!({"settings": {"parameters": [{"name": name, "value": value}]}});
        let (status, answer) =
            rival.call(&app, Method::PUT, &rival.path(&format!("/users/{rival_user}")), Some(body)).await;
        assert_eq!(status, 422, "{name}={value}: {answer}");
    }

    // On the server: nothing set on my user, nothing set by anyone in either default database.
    assert_eq!(settings_count(&app, &mine, &rival.default_db).await, ("0".into(), "0".into()));
    assert_eq!(settings_count(&app, &rival_user, &app.default_db).await, ("0".into(), "0".into()));
    assert_eq!(
        app.target_strings("SELECT rolcanlogin::text FROM pg_roles WHERE rolname = 'postgres'", &[]).await,
        ["true"]
    );
}
on_each_version!(settings_stay_within_the_teams_users_and_databases);
