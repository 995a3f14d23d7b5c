//! Operating pgplane without losing the tenant boundary, through the real binary: secrets
//! given by file or environment (a flag draws a warning), key rotation while servers keep
//! writing, and retention of the audit and drift logs by `pgplane serve`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgplane_core::model::{Cluster, User, DEFAULT_TEAM_ID};
use pgplane_core::secrets::Sealer;
use pgplane_gateway::GatewayConfig;
use pgplane_reconciler::{Reconciler, ReconcilerConfig};
use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;
use uuid::Uuid;

/// Writes a secret to a file of the test's temporary directory; returns its path.
fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("write secret file");
    path.to_string_lossy().into_owned()
}

/// Runs `pgplane <args>` with `env` (and none of the caller's PGPLANE_ variables).
async fn pgplane(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgplane"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PGPLANE_") {
            command.env_remove(key);
        }
    }
    command.args(args).envs(env.iter().copied()).stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run pgplane")).await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_servers_write_leaves_nothing_under_the_old_key() {
    // Until the switch, a reconciler with the old key only.
    let mut app =
        TestApp::spawn_with(AppOptions { register: false, reconciler: false, ..Default::default() }).await;
    let (stop_old, old_stopped) = tokio::sync::oneshot::channel::<()>();
    let old_reconciler = tokio::spawn(app.reconciler.clone().run(async {
        let _ = old_stopped.await;
    }));
    app.register().await;
    let before: Vec<String> = (0..4).map(|i| app.unique(&format!("before{i}"))).collect();
    for name in &before {
        app.create_user(name).await;
    }
    let _ = stop_old.send(());
    old_reconciler.await.unwrap();

    // The operator's first step: every pgplane restarted with the new key, the old one as the
    // previous key.
    let new_key = Sealer::generate_key();
    let new = Sealer::from_base64(&new_key).unwrap();
    let switching = new.clone().with_previous(&app.sealer);
    let config = ReconcilerConfig { resync_interval: Duration::from_secs(60), ..ReconcilerConfig::default() };
    tokio::spawn(Reconciler::new(app.store.clone(), switching.clone(), config).run(std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let gateway = pgplane_gateway::app(
        app.store.clone(),
        switching,
        GatewayConfig { rate_limit_per_minute: 0, ..GatewayConfig::default() },
    );
    tokio::spawn(pgplane_gateway::serve(
        listener,
        gateway,
        pgplane_gateway::ServeLimits::default(),
        std::future::pending(),
    ));
    app.base_url = base_url;

    // Then the rotation, while that server creates users and resets passwords.
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PGPLANE_DATABASE_URL_FILE", secret_file(dir.path(), "database-url", &app.metadata_url)),
        ("PGPLANE_SECRET_KEY_FILE", secret_file(dir.path(), "old.key", &app.secret_key)),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let new_key_file = secret_file(dir.path(), "new.key", &new_key);
    let args = ["secret-key", "rotate", "--new-key-file", &new_key_file];
    let rotate = pgplane(&args, &env);
    let during: Vec<String> = (0..6).map(|i| app.unique(&format!("during{i}"))).collect();
    let writes = async {
        let mut reset = Vec::new();
        for (created, existing) in during.iter().zip(before.iter().cycle()) {
            app.create_user(created).await;
            let path = app.cluster_path(&format!("/users/{existing}/reset_auth"));
            let (status, body) = app.post(&path, json!({})).await;
            assert_eq!(status, 200, "{body}");
            reset.push((existing.clone(), body["user"]["password"].as_str().unwrap().to_string()));
        }
        reset
    };
    let (rotated, reset) = tokio::join!(rotate, writes);
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    let stderr = String::from_utf8_lossy(&rotated.stderr);
    assert!(rotated.status.success(), "{stderr}");
    assert!(stdout.starts_with("re-sealed "), "{stdout}");
    assert!(!stderr.contains("warning"), "secrets from files draw no warning: {stderr}");

    // Nothing is left under the old key: the new key alone opens every secret, and no reset
    // made during the rotation was undone by it.
    let prefix = new.sealed_prefix();
    let (left,): (i64,) = sqlx::query_as(
        "select (select count(*) from cluster_users where substring(credentials_sealed from 1 for $2) <> $1)
              + (select count(*) from clusters where substring(admin_password_sealed from 1 for $2) <> $1)",
    )
    .bind(&prefix)
    .bind(prefix.len() as i32)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(left, 0, "secrets still under another key");
    let cluster_id = Uuid::parse_str(&app.cluster_id).unwrap();
    let cluster = app.store.cluster_by_id(cluster_id).await.unwrap().unwrap();
    let admin_password =
        new.open_str(&cluster.admin_password_sealed, &Cluster::admin_password_context(cluster_id)).unwrap();
    assert_eq!(admin_password, app.admin_password);
    let users = app.store.list_users(cluster_id).await.unwrap();
    assert_eq!(users.len(), 1 + before.len() + during.len());
    for user in &users {
        let opened = new.open(&user.credentials_sealed, &User::credentials_context(cluster_id, &user.name));
        assert!(opened.is_ok(), "{} opens with the new key alone", user.name);
    }
    for (name, password) in reset.iter().rev().take(before.len()) {
        let (_, shown) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
        assert_eq!(shown["user"]["password"], password.as_str(), "{name}: the last reset stands");
        assert!(app.target.login(name, password, &app.default_db).await.is_ok(), "{name} logs in");
    }

    // Secrets given as flags still work, with a warning that does not repeat them.
    let again = pgplane(
        &[
            "secret-key",
            "rotate",
            "--secret-key",
            &new_key,
            "--new-key-file",
            &new_key_file,
            "--database-url",
            &app.metadata_url,
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "re-sealed 0 secrets under the new key\n");
    assert!(stderr.contains("warning: --secret-key puts a secret on the command line"), "{stderr}");
    assert!(stderr.contains("warning: --database-url puts a secret on the command line"), "{stderr}");
    let meta_password = app.metadata_url.split(':').nth(2).unwrap().split('@').next().unwrap();
    assert!(!stderr.contains(&new_key) && !stderr.contains(meta_password), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prunes_audit_and_drift_events_past_their_retention() {
    let app = TestApp::spawn(15).await;
    let cluster_id = Uuid::parse_str(&app.cluster_id).unwrap();
    for (object, days) in [("audit-old", 40), ("audit-new", 20)] {
        sqlx::query(
            "insert into audit_events (at, team_id, token_id, action, object, status)
             values (now() - make_interval(days => $1), $2, 'test', 'user.create', $3, 201)",
        )
        .bind(days)
        .bind(DEFAULT_TEAM_ID)
        .bind(object)
        .execute(app.store.pool())
        .await
        .unwrap();
    }
    for (name, days) in [("drift-old", 70), ("drift-new", 40)] {
        sqlx::query(
            "insert into drift_events (found_at, cluster_id, kind, name, description)
             values (now() - make_interval(days => $1), $2, 'user', $3, 'test')",
        )
        .bind(days)
        .bind(cluster_id)
        .bind(name)
        .execute(app.store.pool())
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pgplane"))
        .args(["serve", "--no-gateway", "--audit-retention", "30"])
        .env("PGPLANE_DATABASE_URL_FILE", secret_file(dir.path(), "database-url", &app.metadata_url))
        .env("PGPLANE_SECRET_KEY", &app.secret_key)
        .env("PGPLANE_DRIFT_RETENTION", "60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgplane serve");
    let left = || async {
        let audit: Vec<(String,)> =
            sqlx::query_as("select object from audit_events where object like 'audit-%' order by object")
                .fetch_all(app.store.pool())
                .await
                .unwrap();
        let drift: Vec<(String,)> =
            sqlx::query_as("select name from drift_events where cluster_id = $1 order by name")
                .bind(cluster_id)
                .fetch_all(app.store.pool())
                .await
                .unwrap();
        (
            audit.into_iter().map(|r| r.0).collect::<Vec<_>>(),
            drift.into_iter().map(|r| r.0).collect::<Vec<_>>(),
        )
    };
    let pruned = app.eventually(Duration::from_secs(30), || async { left().await.1 == ["drift-new"] }).await;
    serve.kill().ok();
    serve.wait().ok();
    assert!(pruned, "drift events past 60 days were pruned: {:?}", left().await);
    assert_eq!(left().await, (vec!["audit-new".to_string()], vec!["drift-new".to_string()]));
}
