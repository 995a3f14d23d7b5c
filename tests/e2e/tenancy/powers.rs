//! Attacks that reach for server-wide powers: REPLICATION (a base backup), other teams'
//! databases through PUBLIC's CONNECT, a session held on `template1`, and a role name taken
//! while a team's pass creates it.

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
            pgplane_target_server::sql::ident(&before)
        ))
        .await
        .unwrap();
    assert!(connects(&app, &rival_user, &rival_password, &before).await);
    // The plan shows what the next pass does about it, and names none of the rival's roles.
    let (status, plan) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(status, 200, "{plan}");
    let rights: Vec<&serde_json::Value> = plan["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["phase"] == "database_rights")
        .collect();
    assert_eq!(rights.len(), 1, "{plan}");
    assert_eq!((&rights[0]["name"], &rights[0]["step"]), (&json!(before), &json!("close_to_public")));
    assert!(rights[0]["drift"].as_str().unwrap().contains("PUBLIC"), "{plan}");
    let sql = rights[0]["statements"][0]["sql"].as_str().unwrap();
    assert!(sql.starts_with("REVOKE CONNECT, TEMPORARY ON DATABASE"), "{sql}");
    assert!(!plan.to_string().contains(&rival.primary_user) && !plan.to_string().contains(&rival_user));
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

/// REPLICATION: refused to tenants, allowed by the operator only to a cluster alone on its
/// server, and taken away when that server becomes shared.
mod replication {
    use pgplane_testkit::{AppOptions, TestApp};
    use reqwest::Method;
    use serde_json::json;

    use super::super::Rival;
    use crate::{on_each_version, sqlstate};

    const REPLICATION: &str = "SELECT rolreplication::text FROM pg_catalog.pg_roles WHERE rolname = $1";

    /// Runs `pg_basebackup` as `user` against the test's server into a fresh directory; returns
    /// whether it succeeded, its stderr, and whether anything was written there.
    async fn base_backup(app: &TestApp, user: &str, password: &str) -> (bool, String, bool) {
        let dir = std::env::temp_dir().join(format!("pgplane-basebackup-{}", app.unique("b")));
        let mut command = std::process::Command::new("pg_basebackup");
        command
            .args(["-h", &app.target.host, "-p", &app.target.port.to_string(), "-U", user, "-w"])
            .args(["-X", "none", "-c", "fast", "-D"])
            .arg(&dir)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10");
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("pg_basebackup runs (Debian's postgresql-client has it)");
        let copied = std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        let _ = std::fs::remove_dir_all(&dir);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), copied)
    }

    /// Opens a replication connection as `user` with `psql` and runs IDENTIFY_SYSTEM; returns
    /// whether it worked, and psql's stderr.
    async fn replication_connection(app: &TestApp, user: &str, password: &str) -> (bool, String) {
        let mut command = std::process::Command::new("psql");
        command
            .arg(format!(
                "host={} port={} user={user} dbname=postgres replication=true connect_timeout=10",
                app.target.host, app.target.port
            ))
            .args(["-w", "-X", "-c", "IDENTIFY_SYSTEM"])
            .env("PGPASSWORD", password);
        let out =
            tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("psql runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Whether `stderr` is the server's refusal of a WAL sender to a role without REPLICATION.
    fn refused_for_replication(stderr: &str) -> bool {
        stderr.contains("replication role") || stderr.contains("permission denied to start WAL sender")
    }

    /// REPLICATION reads the whole server: by default no tenant gets it, whether it asks at
    /// creation or by an update (422, nothing changes), cannot give it to itself with CREATEROLE
    /// (17), and its users cannot take a base backup of the server.
    async fn replication_is_refused_and_a_base_backup_copies_nothing(major: u32) {
        let app = TestApp::spawn(major).await;
        let rival = Rival::register(&app, "repl").await;
        let users = rival.path("/users");

        let asked = app.unique("rival_replica");
        let body = json!({"name": asked, "settings": {"pg_allow_replication": true}});
        let (status, answer) = rival.call(&app, Method::POST, &users, Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("reads the whole server"), "{answer}");
        assert!(!app.role_exists(&asked).await, "a refused create leaves no role");

        let name = app.unique("rival_reader");
        let (status, created) = rival.call(&app, Method::POST, &users, Some(json!({"name": name}))).await;
        assert_eq!(status, 201, "{created}");
        let password = created["user"]["password"].as_str().unwrap().to_string();
        let path = rival.path(&format!("/users/{name}"));
        let (status, answer) = rival
            .call(&app, Method::PUT, &path, Some(json!({"settings": {"pg_allow_replication": true}})))
            .await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(app.target_strings(REPLICATION, &[&name]).await, ["false"]);
        let (_, shown) = rival.call(&app, Method::GET, &path, None).await;
        assert_eq!(shown["user"]["settings"]["pg_allow_replication"], false, "nothing changed: {shown}");

        // With CREATEROLE (17), the rival's primary user cannot hand out REPLICATION itself.
        if major >= 16 {
            let session = rival.session(&app, &rival.default_db).await;
            let err = session
                .batch_execute(&format!("ALTER ROLE \"{name}\" REPLICATION"))
                .await
                .expect_err("REPLICATION needs REPLICATION to grant");
            assert_eq!(sqlstate(&err), "42501", "{err}");
            assert_eq!(app.target_strings(REPLICATION, &[&name]).await, ["false"]);
        }

        // The base backup that would copy every team's data and verifiers is refused by the server.
        let (ok, stderr, copied) = base_backup(&app, &name, &password).await;
        assert!(!ok, "pg_basebackup succeeded as a tenant's user: {stderr}");
        assert!(
            refused_for_replication(&stderr),
            "the failure is the missing REPLICATION attribute, not something else: {stderr}"
        );
        assert!(!copied, "nothing was copied");

        // REPLICATION given by hand (a superuser's mistake) is drift: the rival's next full pass
        // takes it away and records it.
        let admin = app.target_admin("postgres").await;
        admin.batch_execute(&format!("ALTER ROLE \"{name}\" REPLICATION")).await.expect("by hand");
        let rival_id = rival.cluster_id.parse().unwrap();
        app.reconciler.reconcile_now(rival_id).await.expect("pass");
        assert_eq!(app.target_strings(REPLICATION, &[&name]).await, ["false"]);
        let drift = app.store.list_drift(rival_id, 20).await.expect("drift");
        assert!(
            drift.iter().any(|d| d.name == name && d.description.contains("REPLICATION was granted")),
            "{drift:?}"
        );
    }
    on_each_version!(replication_is_refused_and_a_base_backup_copies_nothing);

    /// Where the operator allows it, a cluster alone on its server may give REPLICATION (its user
    /// can then take a base backup); once another cluster is registered on the server, new
    /// requests are refused and the next pass takes it away, the user's last_error saying why.
    async fn replication_is_for_sole_tenants_and_goes_when_the_server_is_shared(major: u32) {
        let options = AppOptions {
            target_major: major,
            allow_replication_for_sole_tenants: true,
            ..Default::default()
        };
        let app = TestApp::spawn_with(options).await;
        let name = app.unique("sole_replica");
        let (status, created) = app
            .post(
                &app.cluster_path("/users"),
                json!({"name": name, "settings": {"pg_allow_replication": true}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(app.target_strings(REPLICATION, &[&name]).await, ["true"]);
        let password = created["user"]["password"].as_str().unwrap().to_string();
        let (ok, stderr) = replication_connection(&app, &name, &password).await;
        assert!(ok, "a replication connection opens where it is allowed: {stderr}");

        let rival = Rival::register(&app, "sharer").await;
        let other = app.unique("late_replica");
        let body = json!({"name": other, "settings": {"pg_allow_replication": true}});
        let (status, answer) = app.post(&app.cluster_path("/users"), body.clone()).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("hosts other clusters"), "{answer}");
        let (status, _) = rival.call(&app, Method::POST, &rival.path("/users"), Some(body)).await;
        assert_eq!(status, 422, "the rival is refused too");

        app.reconciler.reconcile_now(app.cluster_id.parse().unwrap()).await.expect("pass");
        assert_eq!(app.target_strings(REPLICATION, &[&name]).await, ["false"], "the pass took it away");
        let (_, shown) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
        let error = shown["user"]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("hosts other clusters"), "never silently: {shown}");
        let (ok, stderr) = replication_connection(&app, &name, &password).await;
        assert!(!ok && refused_for_replication(&stderr), "no replication connection once shared: {stderr}");
    }
    on_each_version!(replication_is_for_sole_tenants_and_goes_when_the_server_is_shared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_rival_is_creating_is_never_taken_for_the_teams() {
    // From PostgreSQL 16 the rival's primary user holds CREATEROLE. It begins creating the
    // role a user of team A is about to get and holds its transaction open while team A's pass
    // creates that user: the pass's CREATE ROLE waits for the name until its lock timeout and
    // then gives it up (409, as for a name taken before), so that once the rival commits no
    // later pass takes the rival's role for team A's user (its password replaced, the rival
    // still its ADMIN).
    let app = TestApp::spawn(17).await;
    let rival = Rival::register(&app, "racer").await;
    let name = app.unique("raced");
    let session = rival.session(&app, &rival.default_db).await;
    session
        .batch_execute(&format!("BEGIN; CREATE ROLE {name} LOGIN PASSWORD 'rival-made-it'"))
        .await
        .unwrap();
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["id"], "conflict", "{body}");
    session.batch_execute("COMMIT").await.unwrap();
    let verifier = "SELECT rolpassword::text FROM pg_authid WHERE rolname = $1";
    let before = app.target_strings(verifier, &[&name]).await;
    assert_eq!(before.len(), 1);
    // Team A writes on: its passes leave the rival's role as the rival made it.
    app.create_user(&app.unique("after")).await;
    let (status, _) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 404);
    assert_eq!(app.target_strings(verifier, &[&name]).await, before, "the rival's password is untouched");
}
