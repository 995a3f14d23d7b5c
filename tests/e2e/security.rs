//! Security: scopes on every endpoint, teams that cannot see each other, token expiry and
//! revocation, rate limits, the audit log, and secrets that never leak (metadata dump, target
//! server log with everything on, pgplane's own log, API error bodies).

use std::process::Command;
use std::time::Duration;

use pgplane_testkit::{captured_logs, AppOptions, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// One call per operation, shaped so that it changes nothing even when allowed (unknown
/// objects, invalid names), with the scope it needs.
fn every_operation(app: &TestApp) -> Vec<(Method, String, Option<Value>, &'static str)> {
    let c = app.cluster_path("");
    vec![
        (Method::GET, "/v2/databases".into(), None, "database:read"),
        (Method::POST, "/v2/databases".into(), Some(json!({})), "database:create"),
        (Method::GET, c.clone(), None, "database:read"),
        (
            Method::DELETE,
            "/v2/databases/00000000-0000-0000-0000-000000000000".into(),
            None,
            "database:delete",
        ),
        (Method::GET, format!("{c}/users"), None, "database:read"),
        (Method::POST, format!("{c}/users"), Some(json!({"name": ""})), "database:create"),
        (Method::GET, format!("{c}/users/{}", app.primary_user), None, "database:read"),
        (Method::PUT, format!("{c}/users/nobody"), Some(json!({"settings": {}})), "database:update"),
        (Method::POST, format!("{c}/users/nobody/reset_auth"), Some(json!({})), "database:update"),
        (Method::DELETE, format!("{c}/users/nobody"), None, "database:delete"),
        (Method::GET, format!("{c}/dbs"), None, "database:read"),
        (Method::POST, format!("{c}/dbs"), Some(json!({"name": ""})), "database:create"),
        (Method::GET, format!("{c}/dbs/{}", app.default_db), None, "database:read"),
        (Method::DELETE, format!("{c}/dbs/nothing"), None, "database:delete"),
        (Method::GET, "/v2/audit_events".into(), None, "database:read"),
        (Method::GET, format!("{c}/users/{}/dependencies", app.primary_user), None, "database:read"),
        (Method::DELETE, format!("{c}/users/nobody?if_owns=refuse"), None, "database:delete"),
        (Method::GET, format!("{c}/plan"), None, "database:read"),
        (Method::POST, "/v2/databases?dry_run=true".into(), Some(json!({"name": ""})), "database:create"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_is_enforced_on_every_endpoint() {
    let app = TestApp::spawn(15).await;
    let scopes = [
        "database:read",
        "database:create",
        "database:update",
        "database:delete",
        "database:view_credentials",
    ];
    for scope in scopes {
        let token = app.issue_token("default", &[scope]).await;
        for (method, path, body, needed) in every_operation(&app) {
            let (status, answer) = app.call_as(&token, method.clone(), &path, body).await;
            if scope == needed {
                assert_ne!(status, 403, "{scope} must allow {method} {path}: {answer}");
                assert!(status < 500, "{method} {path}: {answer}");
            } else {
                assert_eq!(status, 403, "{scope} must not allow {method} {path}: {answer}");
                assert_eq!(answer["id"], "forbidden");
            }
        }
    }
    // Nothing was changed by any of it.
    let (_, users) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1);
    assert!(app.role_exists(&app.primary_user).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_view_credentials_no_password_is_shown_anywhere() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("secretive");
    let password = app.create_user(&name).await;
    let primary_password = app.primary_password().await;
    let reader = app.issue_token("default", &["database:read", "database:create", "database:update"]).await;
    let mut answers = Vec::new();
    for path in [
        "/v2/databases".to_string(),
        app.cluster_path(""),
        app.cluster_path("/users"),
        app.cluster_path(&format!("/users/{name}")),
    ] {
        let (status, body) = app.call_as(&reader, Method::GET, &path, None).await;
        assert_eq!(status, 200);
        answers.push(body);
    }
    let (status, body) = app
        .call_as(&reader, Method::POST, &app.cluster_path("/users"), Some(json!({"name": app.unique("new")})))
        .await;
    assert_eq!(status, 201);
    assert!(body["user"].get("password").is_none(), "{body}");
    answers.push(body);
    let (status, body) = app
        .call_as(
            &reader,
            Method::POST,
            &app.cluster_path(&format!("/users/{name}/reset_auth")),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    answers.push(body);
    for answer in &answers {
        let text = answer.to_string();
        assert!(!text.contains("\"password\""), "{text}");
        assert!(!text.contains(&password) && !text.contains(&primary_password), "{text}");
    }
    let connection = &answers[1]["database"]["connection"];
    assert_eq!(
        connection["uri"].as_str().unwrap(),
        format!(
            "postgresql://{}@127.0.0.1:{}/{}?sslmode=disable",
            app.primary_user, app.target.port, app.default_db
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_team_can_neither_see_nor_touch_anything() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("mine");
    app.create_user(&name).await;
    let db = app.unique("minedb");
    app.create_db(&db).await;
    let other = app.issue_token(&format!("other-{}", app.suffix), &["*"]).await;
    let c = app.cluster_path("");
    for (method, path, body) in [
        (Method::GET, c.clone(), None),
        (Method::DELETE, c.clone(), None),
        (Method::GET, format!("{c}/users"), None),
        (Method::POST, format!("{c}/users"), Some(json!({"name": app.unique("intruder")}))),
        (Method::GET, format!("{c}/users/{name}"), None),
        (Method::PUT, format!("{c}/users/{name}"), Some(json!({"settings": {"pg_allow_replication": true}}))),
        (Method::POST, format!("{c}/users/{name}/reset_auth"), Some(json!({}))),
        (Method::DELETE, format!("{c}/users/{name}"), None),
        (Method::GET, format!("{c}/dbs"), None),
        (Method::POST, format!("{c}/dbs"), Some(json!({"name": app.unique("intruderdb")}))),
        (Method::GET, format!("{c}/dbs/{db}"), None),
        (Method::DELETE, format!("{c}/dbs/{db}"), None),
    ] {
        let (status, answer) = app.call_as(&other, method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["id"], "not_found");
    }
    let (_, list) = app.call_as(&other, Method::GET, "/v2/databases", None).await;
    assert_eq!(list, json!({"databases": []}));
    let (_, events) = app.call_as(&other, Method::GET, "/v2/audit_events", None).await;
    assert!(events["audit_events"].as_array().unwrap().iter().all(|e| e["status"] == 404));
    assert!(app.role_exists(&name).await && app.database_exists(&db).await);
    assert!(!app.role_exists(&app.unique("intruder")).await);
    let replication =
        app.target_strings("SELECT rolreplication::text FROM pg_roles WHERE rolname = $1", &[&name]).await;
    assert_eq!(replication, ["false"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_stop_working() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let token = app.issue_token("default", &["*"]).await;
    let (status, _) = app.call_as(&token, Method::GET, "/v2/databases", None).await;
    assert_eq!(status, 200);
    let token_id = pgplane_core::tokens::token_id(&token).unwrap().to_string();
    app.store.revoke_token(&token_id).await.unwrap();
    let refused = app
        .eventually(Duration::from_secs(5), || async {
            app.call_as(&token, Method::GET, "/v2/databases", None).await.0 == 401
        })
        .await;
    assert!(refused, "a revoked token is refused although it was cached");

    let expiring = app.issue_token("default", &["*"]).await;
    let (status, _) = app.call_as(&expiring, Method::GET, "/v2/databases", None).await;
    assert_eq!(status, 200);
    let id = pgplane_core::tokens::token_id(&expiring).unwrap();
    sqlx::query("update api_tokens set expires_at = now() - interval '1 second' where token_id = $1")
        .bind(id)
        .execute(app.store.pool())
        .await
        .unwrap();
    // The cached entry still knows the old expiry; the store is asked again when it lapses.
    let refused = app
        .eventually(Duration::from_secs(40), || async {
            app.call_as(&expiring, Method::GET, "/v2/databases", None).await.0 == 401
        })
        .await;
    assert!(refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_is_rate_limited_with_digitalocean_headers() {
    let app =
        TestApp::spawn_with(AppOptions { register: false, rate_limit_per_minute: 5, ..Default::default() })
            .await;
    let url = format!("{}/v2/databases", app.base_url);
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = app.http.get(&url).bearer_auth(&app.token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| response.headers()[name].to_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(header("ratelimit-limit"), 5);
        assert!(header("ratelimit-reset") > 1_700_000_000);
        assert!(response.headers().get("retry-after").is_none());
        remaining.push(header("ratelimit-remaining"));
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let response = app.http.get(&url).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "too_many_requests");
    let other = app.issue_token("default", &["*"]).await;
    let (status, _) = app.call_as(&other, Method::GET, "/v2/databases", None).await;
    assert_eq!(status, 200, "another token has its own allowance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_are_audited_without_secrets() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("audited");
    let password = app.create_user(&name).await;
    let (status, _) = app.post(&app.cluster_path(&format!("/users/{name}/reset_auth")), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{}", app.primary_user))).await;
    assert_eq!(status, 422);
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 204);
    app.get(&app.cluster_path("/users")).await;

    let (status, body) = app.get("/v2/audit_events").await;
    assert_eq!(status, 200);
    let events = body["audit_events"].as_array().unwrap();
    let summary: Vec<(String, String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["object"].as_str().unwrap_or_default().to_string(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("user.delete".to_string(), name.clone(), 204),
            ("user.delete".into(), app.primary_user.clone(), 422),
            ("user.reset_auth".into(), name.clone(), 200),
            ("user.create".into(), name.clone(), 201),
            ("cluster.register".into(), format!("c-{}", app.suffix), 201),
        ],
        "reads are not audited; every mutation is, newest first"
    );
    for event in events {
        assert!(event["request_id"].is_string() && event["at"].is_string() && event["token_id"].is_string());
    }
    let text = body.to_string();
    assert!(!text.contains(&password) && !text.contains(&app.admin_password));
    let (_, scoped) = app.get(&format!("/v2/audit_events?cluster_id={}&limit=2", app.cluster_id)).await;
    assert_eq!(scoped["audit_events"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_to_logs_error_bodies_or_a_metadata_dump() {
    // The target's server log is read from its container.
    if !pgplane_testkit::own_containers() {
        return;
    }
    let app =
        TestApp::spawn_with(AppOptions { apply_timeout: Duration::from_secs(3), ..Default::default() }).await;
    let mut secrets = vec![app.token.clone(), app.admin_password.clone(), app.primary_password().await];
    let mut error_bodies = Vec::new();
    let name = app.unique("leaky");
    secrets.push(app.create_user(&name).await);
    let (_, reset) = app.post(&app.cluster_path(&format!("/users/{name}/reset_auth")), json!({})).await;
    secrets.push(reset["user"]["password"].as_str().unwrap().to_string());

    // Failing DDL: hold a lock that ALTER ROLE needs, so that a password change times out on
    // the target (lock_timeout) and the server logs the error with everything turned on.
    let mut locker = app.target_admin("postgres").await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE pg_catalog.pg_authid IN SHARE MODE").await.unwrap();
    let (status, body) = app.post(&app.cluster_path(&format!("/users/{name}/reset_auth")), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["status"], "pending", "{body}");
    secrets.push(body["user"]["password"].as_str().unwrap().to_string());
    let failed = app
        .eventually(Duration::from_secs(20), || async {
            let (_, user) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
            user["user"]["last_error"].as_str().is_some_and(|e| e.contains("lock timeout"))
        })
        .await;
    assert!(failed, "the password change failed on the target while the lock was held");
    tx.rollback().await.unwrap();
    let converged = app
        .eventually(Duration::from_secs(30), || async {
            app.get(&app.cluster_path(&format!("/users/{name}"))).await.1["user"]["status"] == "ready"
        })
        .await;
    assert!(converged);
    let (_, fresh) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert!(app
        .target
        .login(&name, fresh["user"]["password"].as_str().unwrap(), &app.default_db)
        .await
        .is_ok());

    // Errors of every kind.
    for (method, path, body) in [
        (Method::POST, app.cluster_path("/users"), Some(json!({"name": name}))),
        (Method::DELETE, app.cluster_path(&format!("/users/{}", app.primary_user)), None),
        (Method::POST, "/v2/databases".to_string(), Some(app.registration("leak-test"))),
        (Method::GET, app.cluster_path("/users/nobody"), None),
    ] {
        error_bodies.push(app.call(method, &path, body).await.1);
    }
    let mut wrong = app.registration(&format!("w-{}", app.suffix));
    wrong["pgplane"]["password"] = json!("wrong-but-secret-pw");
    error_bodies.push(app.post("/v2/databases", wrong).await.1);
    secrets.push("wrong-but-secret-pw".into());

    let dump = Command::new("pg_dump")
        .arg("--dbname")
        .arg(pgplane_testkit::servers().metadata.url(&app.metadata_database()))
        .output()
        .expect("pg_dump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("cluster_users"), "the dump holds the data");

    let target_log = app.target.log();
    assert!(target_log.contains("lock timeout"), "the failing DDL was logged by the target");
    let pgplane_log = captured_logs();
    let bodies: String = error_bodies.iter().map(Value::to_string).collect();
    for (i, secret) in secrets.iter().enumerate() {
        assert!(!target_log.contains(secret.as_str()), "target log leaks secret #{i}");
        assert!(!pgplane_log.contains(secret.as_str()), "pgplane log leaks secret #{i}");
        assert!(!bodies.contains(secret.as_str()), "an error body leaks secret #{i}");
        assert!(!dump.contains(secret.as_str()), "the metadata dump leaks secret #{i}");
    }
    let verifiers: Vec<&str> = target_log.lines().filter(|l| l.contains("SCRAM-SHA-256$4096:")).collect();
    assert!(verifiers.is_empty(), "target log leaks verifiers: {verifiers:?}");
    assert!(!dump.contains("SCRAM-SHA-256$"), "the dump holds a verifier in the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_reseals_every_secret() {
    let app = TestApp::spawn(15).await;
    app.create_user(&app.unique("rotated")).await;
    let new =
        pgplane_core::secrets::Sealer::from_base64(&pgplane_core::secrets::Sealer::generate_key()).unwrap();
    let rotation = app.store.reseal_all(&app.sealer, &new).await.unwrap();
    assert_eq!(rotation.resealed, 3, "the admin password and two users' credentials");
    assert!(rotation.unopenable.is_empty());
    let users = app.store.list_users(app.cluster_id.parse().unwrap()).await.unwrap();
    for user in &users {
        let context = pgplane_core::model::User::credentials_context(user.cluster_id, &user.name);
        assert!(new.open(&user.credentials_sealed, &context).is_ok());
        assert!(app.sealer.open(&user.credentials_sealed, &context).is_err());
    }
    // A sealer that knows both keys (the switch-over) keeps working.
    let both = new.clone().with_previous(&app.sealer);
    let cluster = app.store.cluster_by_id(app.cluster_id.parse().unwrap()).await.unwrap().unwrap();
    let context = pgplane_core::model::Cluster::admin_password_context(cluster.cluster_id);
    assert_eq!(both.open_str(&cluster.admin_password_sealed, &context).unwrap(), app.admin_password);
}
