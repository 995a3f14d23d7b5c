//! The tenant boundary around the servers themselves: several teams' clusters on one server,
//! registration aimed where it should not go, moving a cluster, the primary user reaching for
//! the server, and one team's stalling servers against another team's writes.

use std::time::Duration;

use pgplane_target_server::TargetPolicy;
use pgplane_testkit::{own_containers, servers, AppOptions, TestApp};
use serde_json::{json, Value};

use crate::{on_each_version, sqlstate};

/// A registration body for `app`'s server under `name`, reached as `host`, with its own primary
/// user and default database unless `patch` says otherwise.
fn second_cluster(app: &TestApp, name: &str, host: &str, patch: Value) -> Value {
    let mut body = app.registration(&app.unique(name).replace('_', "-"));
    body["pgplane"]["host"] = json!(host);
    body["pgplane"]["primary_user"] = json!(app.unique(&format!("{name}_admin")));
    body["pgplane"]["default_database"] = json!(app.unique(&format!("{name}_db")));
    for (k, v) in patch.as_object().unwrap() {
        body["pgplane"][k] = v.clone();
    }
    body
}

/// The roles on the server that this test named (other tests share the server and come and go).
const ROLES_OF_THIS_TEST: &str =
    "SELECT rolname::text FROM pg_roles WHERE strpos(rolname, $1) > 0 ORDER BY 1";

async fn two_teams_on_one_server_never_share_or_see_an_object(major: u32) {
    let app = TestApp::spawn(major).await;
    let team_b = app.issue_token(&app.unique("team_b"), &["*"]).await;
    let post_b = |path: String, body: Value| {
        let token = team_b.clone();
        let app = &app;
        async move { app.call_as(&token, reqwest::Method::POST, &path, Some(body)).await }
    };
    let roles_before = app.target_strings(ROLES_OF_THIS_TEST, &[&app.suffix]).await;
    let primary_password = app.primary_password().await;

    // The same server under other names: it is recognised by what it is, and team B may not
    // take team A's primary user or default database, not even by leaving them at defaults.
    for (host, patch) in [
        ("localhost", json!({"primary_user": app.primary_user, "default_database": app.default_db})),
        ("127.0.0.1", json!({"primary_user": app.primary_user})),
        ("localhost", json!({"default_database": app.default_db})),
    ] {
        let (status, body) =
            post_b("/v2/databases".into(), second_cluster(&app, "b", host, patch.clone())).await;
        assert_eq!(status, 409, "{host} {patch}: {body}");
        assert_eq!(body["id"], "conflict");
    }
    let roles_after = app.target_strings(ROLES_OF_THIS_TEST, &[&app.suffix]).await;
    assert_eq!(roles_before, roles_after, "refused registrations changed nothing on the server");
    app.target
        .login(&app.primary_user, &primary_password, &app.default_db)
        .await
        .expect("team A's primary user still logs in with its password");

    // With names of its own, team B registers the same server (as "localhost").
    let (status, b) = post_b("/v2/databases".into(), second_cluster(&app, "b", "localhost", json!({}))).await;
    assert_eq!(status, 201, "{b}");
    let b_id = b["database"]["id"].as_str().unwrap().to_string();
    let b_path = |rest: &str| format!("/v2/databases/{b_id}{rest}");

    // A name one cluster manages is a conflict for the other, whichever kind it is.
    let shared = app.unique("shared");
    app.create_user(&shared).await;
    for (path, name) in [
        ("/users", shared.as_str()),
        ("/users", app.primary_user.as_str()),
        ("/dbs", app.default_db.as_str()),
    ] {
        let (status, body) = post_b(b_path(path), json!({ "name": name })).await;
        assert_eq!(status, 409, "{path} {name}: {body}");
        assert!(body["message"].as_str().unwrap().contains("another cluster"), "{body}");
    }
    let (status, body) =
        app.post(&app.cluster_path("/users"), json!({"name": b["database"]["users"][0]["name"]})).await;
    assert_eq!(status, 409, "team A cannot take team B's primary user: {body}");
    let b_user_names: Vec<String> = {
        let (_, users) = app.call_as(&team_b, reqwest::Method::GET, &b_path("/users"), None).await;
        users["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(b_user_names.len(), 1, "team B has its primary user only: {b_user_names:?}");

    // Neither team's "unmanaged" listing shows the other's objects.
    let (status, unmanaged) = app.call_as(&team_b, reqwest::Method::GET, &b_path("/unmanaged"), None).await;
    assert_eq!(status, 200, "{unmanaged}");
    let listed = unmanaged.to_string();
    for name in [&shared, &app.primary_user, &app.default_db] {
        assert!(!listed.contains(&format!("\"{name}\"")), "team B sees team A's {name}: {listed}");
    }
    let (status, unmanaged) = app.get(&app.cluster_path("/unmanaged")).await;
    assert_eq!(status, 200, "{unmanaged}");
    assert!(!unmanaged.to_string().contains(&b_user_names[0]), "team A sees team B's primary user");
}
on_each_version!(two_teams_on_one_server_never_share_or_see_an_object);

/// The setting of the batch tests: team A's user "victim" (returned with its password), and
/// team B (its token) with a cluster of its own on the same server (its id).
async fn a_victim_and_a_rival_cluster(app: &TestApp) -> (String, String, String, String) {
    let team_b = app.issue_token(&app.unique("team_b"), &["*"]).await;
    let victim = app.unique("victim");
    let password = app.create_user(&victim).await;
    let (status, b) = app
        .call_as(
            &team_b,
            reqwest::Method::POST,
            "/v2/databases",
            Some(second_cluster(app, "b", "localhost", json!({}))),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    (victim, password, team_b, b["database"]["id"].as_str().unwrap().to_string())
}

/// `count` new users (`b0`, `b1`, … made unique) created through `users` (a cluster's users
/// path) with `token`; their names.
async fn users_created_as(app: &TestApp, token: &str, users: &str, count: usize) -> Vec<String> {
    let own: Vec<String> = (0..count).map(|i| app.unique(&format!("b{i}"))).collect();
    for name in &own {
        let (status, body) =
            app.call_as(token, reqwest::Method::POST, users, Some(json!({ "name": name }))).await;
        assert_eq!(status, 201, "{body}");
    }
    own
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_deletions_stays_within_its_cluster() {
    // Deletions asked together for one cluster are written together (one transaction). Team B
    // asks, through its own cluster on the same server, for the deletion of team A's user at
    // the same moment as of its own users: its own go, team A's user is not found and stays.
    let app = TestApp::spawn_with(AppOptions::default()).await;
    let (victim, password, team_b, b_id) = a_victim_and_a_rival_cluster(&app).await;
    let b_users = format!("/v2/databases/{b_id}/users");
    let own = users_created_as(&app, &team_b, &b_users, 6).await;
    let deletions = own.iter().chain(std::iter::once(&victim)).map(|name| {
        let (app, token, path) = (&app, team_b.clone(), format!("{b_users}/{name}"));
        async move { app.call_as(&token, reqwest::Method::DELETE, &path, None).await.0 }
    });
    let statuses = futures::future::join_all(deletions).await;
    assert_eq!(statuses[..6], [204; 6], "team B's own users are deleted");
    assert_eq!(statuses[6], 404, "team A's user is not team B's to delete");
    let (status, body) = app.get(&app.cluster_path(&format!("/users/{victim}"))).await;
    assert_eq!(status, 200, "{body}");
    app.target.login(&victim, &password, &app.default_db).await.expect("team A's user still logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_creates_stays_within_its_cluster() {
    // Creates asked together for one cluster are written together (one statement). Team B
    // asks, through its own cluster on the same server, for users of its own together with
    // team A's user and team A's primary user, while its cluster's row is held so that they
    // queue into one batch: its own are created, the other two are a conflict, and team A's
    // users keep their logins. One of its own carries a parameter for its own database, which
    // lands there only; one naming team A's database is refused and creates nothing.
    let app = TestApp::spawn_with(AppOptions::default()).await;
    let (victim, password, team_b, b_id) = a_victim_and_a_rival_cluster(&app).await;
    let b_users = format!("/v2/databases/{b_id}/users");
    let writer = app.metadata_session().await;
    writer.batch_execute("begin").await.unwrap();
    writer
        .execute("select 1 from clusters where cluster_id = $1::text::uuid for update", &[&b_id])
        .await
        .unwrap();
    let own: Vec<String> = (0..4).map(|i| app.unique(&format!("b{i}"))).collect();
    let b_db = app.unique("b_db");
    let reaching = app.unique("b_reaching");
    let asked: Vec<&String> = own.iter().chain([&victim, &app.primary_user, &reaching]).collect();
    let parameter = |database: &str| json!([{"name": "work_mem", "value": "8MB", "database": database}]);
    let creates = futures::future::join_all(asked.iter().enumerate().map(|(i, name)| {
        let (app, token, path) = (&app, team_b.clone(), b_users.clone());
        let body = match i {
            0 => json!({ "name": name, "settings": { "parameters": parameter(&b_db) } }),
            _ if **name == reaching => {
                json!({ "name": name, "settings": { "parameters": parameter(&app.default_db) } })
            }
            _ => json!({ "name": name }),
        };
        async move { app.call_as(&token, reqwest::Method::POST, &path, Some(body)).await }
    }));
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.batch_execute("commit").await.unwrap();
    };
    let (answers, ()) = tokio::join!(creates, release);
    for (name, (status, body)) in asked.iter().zip(&answers).take(own.len()) {
        assert_eq!(*status, 201, "{name}: {body}");
        let password = body["user"]["password"].as_str().unwrap();
        app.target.login(name, password, &b_db).await.expect("team B's own user logs in");
    }
    assert_eq!(
        crate::settings::settings_on_target(&app, &own[0]).await,
        [format!("{b_db}:work_mem=8MB")],
        "the parameter is set in team B's database only"
    );
    for (name, (status, body)) in asked.iter().zip(&answers).skip(own.len()).take(2) {
        assert_eq!(*status, 409, "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains("another cluster"), "{body}");
    }
    let (status, body) = &answers[asked.len() - 1];
    assert!((400..500).contains(status), "a parameter for team A's database: {status} {body}");
    let (status, _) =
        app.call_as(&team_b, reqwest::Method::GET, &format!("{b_users}/{reaching}"), None).await;
    assert_eq!(status, 404, "the refused user was not created");
    let reached: Vec<String> = app
        .target_strings("SELECT rolname::text FROM pg_roles WHERE rolname = $1", &[&reaching.as_str()])
        .await;
    assert!(reached.is_empty(), "no role on the server for the refused user");
    app.target.login(&victim, &password, &app.default_db).await.expect("team A's user still logs in");
    let (status, body) = app.get(&app.cluster_path(&format!("/users/{victim}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["password"], json!(password), "team A's user keeps its password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_resets_stays_within_its_cluster() {
    // Password resets asked together for one cluster are written together (one statement).
    // Team B asks, through its own cluster on the same server, for new passwords for users of
    // its own together with team A's user and team A's primary user, while one of its own
    // users' row is held so that the rest queue into one batch: its own get new passwords that
    // log in, team A's users are not found and keep theirs.
    let app = TestApp::spawn_with(AppOptions::default()).await;
    let (victim, password, team_b, b_id) = a_victim_and_a_rival_cluster(&app).await;
    let b_users = format!("/v2/databases/{b_id}/users");
    let own = users_created_as(&app, &team_b, &b_users, 4).await;
    let writer = app.metadata_session().await;
    writer.batch_execute("begin").await.unwrap();
    let held = writer
        .execute(
            "select 1 from cluster_users where cluster_id = $1::text::uuid and name = $2 for update",
            &[&b_id, &own[0]],
        )
        .await
        .unwrap();
    assert_eq!(held, 1);
    let asked: Vec<&String> = own.iter().chain([&victim, &app.primary_user]).collect();
    let resets = futures::future::join_all(asked.iter().map(|name| {
        let (app, token, path) = (&app, team_b.clone(), format!("{b_users}/{name}/reset_auth"));
        async move { app.call_as(&token, reqwest::Method::POST, &path, Some(json!({}))).await }
    }));
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.batch_execute("commit").await.unwrap();
    };
    let (answers, ()) = tokio::join!(resets, release);
    let b_db = app.unique("b_db");
    for (name, (status, body)) in asked.iter().zip(&answers).take(own.len()) {
        assert_eq!(*status, 200, "{name}: {body}");
        let new_password = body["user"]["password"].as_str().unwrap();
        app.target.login(name, new_password, &b_db).await.expect("team B's own user logs in anew");
    }
    for (name, (status, body)) in asked.iter().zip(&answers).skip(own.len()) {
        assert_eq!(*status, 404, "{name}: {body}");
    }
    app.target.login(&victim, &password, &app.default_db).await.expect("team A's user still logs in");
    let (status, body) = app.get(&app.cluster_path(&format!("/users/{victim}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["password"], json!(password), "team A's user keeps its password");
    let (status, body) = app.get(&app.cluster_path(&format!("/users/{}", app.primary_user))).await;
    assert_eq!((status, body["user"]["status"].as_str()), (200, Some("ready")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_goes_only_where_the_operator_allows() {
    let target = servers().target(15).clone();
    let policy = TargetPolicy::parse("127.0.0.1/32", &target.port.to_string()).unwrap();
    let app =
        TestApp::spawn_with(AppOptions { register: false, target_policy: policy, ..Default::default() })
            .await;
    // A listener on a port outside the policy: a refused registration must not even connect.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bait_port = bait.local_addr().unwrap().port();
    let cases = [
        ("socket directory", json!({"host": "/var/run/postgresql"}), "not a host name"),
        ("smuggled line in host", json!({"host": "127.0.0.1\r\nuser=postgres"}), "not a host name"),
        ("host list", json!({"host": "127.0.0.1,10.0.0.1"}), "not a host name"),
        ("smuggled line in user", json!({"user": "postgres\r\nx"}), "control characters"),
        ("NUL in database", json!({"database": "postgres\u{0}x"}), "control characters"),
        ("overlong user", json!({"user": "u".repeat(64)}), "63 bytes"),
        ("private network", json!({"host": "10.1.2.3"}), "outside the networks"),
        ("other loopback address", json!({"host": "127.0.0.2"}), "outside the networks"),
        ("cloud metadata", json!({"host": "169.254.169.254"}), "outside the networks"),
        ("well-known port", json!({"port": 22}), "outside the networks"),
        ("unlisted port", json!({"port": bait_port}), "outside the networks"),
    ];
    for (case, patch, expected) in cases {
        let mut body = app.registration(&format!("c-{}", app.suffix));
        for (k, v) in patch.as_object().unwrap() {
            body["pgplane"][k] = v.clone();
        }
        let (status, answer) = app.post("/v2/databases", body).await;
        assert_eq!(status, 422, "{case}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(expected), "{case}: {message}");
        assert!(!message.contains(&app.admin_password), "{case}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(200), bait.accept()).await;
    assert!(accepted.is_err(), "a refused registration connected to the port anyway");
    let (_, list) = app.get("/v2/databases").await;
    assert_eq!(list["databases"], json!([]), "nothing was stored");
    // Inside the policy, registration works.
    let (status, body) = app.post("/v2/databases", app.registration(&format!("c-{}", app.suffix))).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_probes_are_capped_per_team() {
    // 5 a minute: a burst of one, then one every 12 s.
    let app =
        TestApp::spawn_with(AppOptions { register: false, probes_per_minute: 5, ..Default::default() }).await;
    let guess = |password: &str| {
        let mut body = app.registration(&format!("c-{}", app.suffix));
        body["pgplane"]["password"] = json!(password);
        body
    };
    let (status, body) = app.post("/v2/databases", guess("guess-1")).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.post("/v2/databases", guess("guess-2")).await;
    assert_eq!(status, 429, "the second guess within seconds is refused: {body}");
    assert_eq!(body["id"], "too_many_requests");
    // Another team has its own allowance.
    let other = app.issue_token(&app.unique("other"), &["*"]).await;
    let (status, body) = app
        .call_as(
            &other,
            reqwest::Method::POST,
            "/v2/databases",
            Some(app.registration(&format!("d-{}", app.suffix))),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Whether the PostgreSQL 15 and 17 servers are two servers (containers of the suite's own;
/// not with PGPLANE_TEST_PG_URL); says "skipped" when not.
fn two_servers() -> bool {
    let two = own_containers();
    if !two {
        eprintln!("skipped: needs two servers of its own (containers)");
    }
    two
}

/// An admin role of the test's own on the PostgreSQL 17 server (the second server of a move).
async fn admin_on(major: u32, name: &str, password: &str) {
    let admin = servers().target(major).admin("postgres").await;
    admin.batch_execute(pgplane_target_server::sql::QUIET).await.unwrap();
    let verifier = pgplane_core::passwords::scram_verifier(password);
    admin.batch_execute(&format!("CREATE ROLE {name} SUPERUSER LOGIN PASSWORD '{verifier}'")).await.unwrap();
    admin.batch_execute(pgplane_target_server::sql::LOUD).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_cluster_needs_full_access_and_adopts_nothing_it_finds() {
    if !two_servers() {
        return;
    }
    let app = TestApp::spawn(15).await;
    let kept = app.unique("kept");
    let taken = app.unique("taken");
    app.create_user(&kept).await;
    app.create_user(&taken).await;
    // On the new server, someone else already has a role named like one of the cluster's users.
    let new_server = servers().target(17).clone();
    let new_admin = app.unique("adm17");
    admin_on(17, &new_admin, "adm17-pw").await;
    let stranger = new_server.admin("postgres").await;
    stranger.batch_execute(&format!("CREATE ROLE {taken} LOGIN PASSWORD 'strangers-own'")).await.unwrap();
    let to_new = json!({
        "host": new_server.host, "port": new_server.port, "user": new_admin, "password": "adm17-pw",
        "sslmode": "disable",
    });

    // An update-only token may change the admin connection to the same server, not move it.
    let updater = app.issue_token("default", &["database:read", "database:update"]).await;
    let same = json!({"host": "localhost", "port": app.target.port, "user": app.admin_user, "password": app.admin_password});
    let (status, body) =
        app.call_as(&updater, reqwest::Method::PUT, &app.cluster_path("/pgplane"), Some(same)).await;
    assert_eq!(status, 200, "same server under another name: {body}");
    let mut confirmed = to_new.clone();
    confirmed["confirm_move"] = json!(true);
    let (status, body) = app
        .call_as(&updater, reqwest::Method::PUT, &app.cluster_path("/pgplane"), Some(confirmed.clone()))
        .await;
    assert_eq!(status, 403, "{body}");
    // Full access, but not confirmed.
    let (status, body) = app.put(&app.cluster_path("/pgplane"), to_new).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("confirm_move"), "{body}");
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    assert_eq!(cluster["database"]["pgplane"]["port"], app.target.port, "not moved: {cluster}");

    // Confirmed with full access: moved; what pgplane finds there is not adopted.
    let (status, body) = app.put(&app.cluster_path("/pgplane"), confirmed).await;
    assert_eq!(status, 200, "{body}");
    let settled = app
        .eventually(Duration::from_secs(20), || async {
            let (_, users) = app.get(&app.cluster_path("/users")).await;
            let status_of = |name: &str| {
                users["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|u| u["name"] == name)
                    .map(|u| u["status"].clone())
            };
            status_of(&kept) == Some(json!("ready")) && status_of(&taken) == Some(json!("conflict"))
        })
        .await;
    assert!(settled, "the missing user is created, the stranger's is a conflict");
    let new = |sql: String| {
        let s = new_server.clone();
        async move { s.admin("postgres").await.query(&sql, &[]).await.unwrap().len() }
    };
    assert_eq!(new(format!("SELECT 1 FROM pg_roles WHERE rolname = '{kept}'")).await, 1);
    assert_eq!(new(format!("SELECT 1 FROM pg_database WHERE datname = '{}'", app.default_db)).await, 1);
    new_server.login(&taken, "strangers-own", "postgres").await.expect("the stranger's role is untouched");

    let (status, _) = app.delete(&app.cluster_path("")).await;
    assert_eq!(status, 204);
    for role in [&kept, &app.primary_user] {
        let _ = stranger.batch_execute(&format!("DROP OWNED BY {role}; ")).await;
    }
    let _ = stranger.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", app.default_db)).await;
    for role in [&kept, &taken, &app.primary_user, &new_admin] {
        let _ = stranger.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await;
    }
}

async fn the_primary_user_stays_a_tenant(major: u32) {
    let app = TestApp::spawn(major).await;
    let version: i32 = app.target_strings("SHOW server_version_num", &[]).await[0].parse().unwrap();
    let own = app.unique("own");
    app.create_user(&own).await;
    // Another team's cluster on the same server, with a user of its own.
    let other_team = app.issue_token(&app.unique("other"), &["*"]).await;
    let (status, other) = app
        .call_as(
            &other_team,
            reqwest::Method::POST,
            "/v2/databases",
            Some(second_cluster(&app, "o", "127.0.0.1", json!({}))),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let other_id = other["database"]["id"].as_str().unwrap();
    let other_primary = other["database"]["users"][0]["name"].as_str().unwrap().to_string();
    let neighbour = app.unique("neighbour");
    let (status, body) = app
        .call_as(
            &other_team,
            reqwest::Method::POST,
            &format!("/v2/databases/{other_id}/users"),
            Some(json!({"name": neighbour})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let me =
        app.target.login(&app.primary_user, &app.primary_password().await, &app.default_db).await.unwrap();
    let refused = [
        format!("GRANT pg_execute_server_program TO {}", app.primary_user),
        format!("GRANT pg_read_server_files TO {}", app.primary_user),
        format!("GRANT pg_write_server_files TO {}", app.primary_user),
        "COPY (SELECT 1) TO PROGRAM 'true'".to_string(),
        "COPY (SELECT 1) TO '/tmp/pgplane-tenant-escape'".to_string(),
        format!("ALTER ROLE {} SUPERUSER", app.primary_user),
        format!("ALTER ROLE {} BYPASSRLS", app.primary_user),
        format!("CREATE ROLE {} SUPERUSER", app.unique("evil")),
        format!("ALTER ROLE {neighbour} PASSWORD 'taken-over'"),
        format!("DROP ROLE {other_primary}"),
        format!("GRANT {neighbour} TO {}", app.primary_user),
    ];
    for sql in &refused {
        let error = me.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&error), "42501", "{sql}: {error}");
    }
    // What it may do with its own cluster: create databases everywhere; from 16 on also manage
    // the cluster's own users (before 16 that goes through pgplane: CREATEROLE would reach
    // every role on the server).
    let own_db = app.unique("own_db");
    me.batch_execute(&format!("CREATE DATABASE {own_db}")).await.expect("CREATEDB");
    me.batch_execute(&format!("DROP DATABASE {own_db}")).await.expect("drops its own database");
    let alter_own = me.batch_execute(&format!("ALTER ROLE {own} CONNECTION LIMIT 5")).await;
    assert_eq!(alter_own.is_ok(), version >= 160000, "{alter_own:?}");
}
on_each_version!(the_primary_user_stays_a_tenant);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_teams_stalling_servers_do_not_hold_up_another_teams_writes() {
    // Four passes at once, two per team; ten servers of another team that accept connections
    // and never answer. Without a per-team share they would hold every slot for the connect
    // deadline, queue behind each other, and keep this team's write pending past its wait.
    let app = TestApp::spawn_with(AppOptions {
        max_concurrent_passes: 4,
        // A write here takes tens of milliseconds; the stalls take the connect deadline (5 s).
        apply_timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .await;
    let mut fakes = Vec::new();
    let mut held = Vec::new();
    for _ in 0..10 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fakes.push(listener.local_addr().unwrap().port());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        held.push(rx);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = tx.send(socket);
            }
        });
    }
    // Registration aimed at a server that stalls answers in bounded time.
    let mut stalled = app.registration(&format!("s-{}", app.suffix));
    stalled["pgplane"]["port"] = json!(fakes[0]);
    let (status, body) = app.post("/v2/databases", stalled).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("did not answer"), "{body}");

    // The other team's ten clusters, registered while their servers answered, now stall.
    let team = app.store.ensure_team(&app.unique("stalling")).await.unwrap();
    for (i, port) in fakes.iter().enumerate() {
        let new = pgplane_core::store::NewCluster {
            team_id: team,
            name: format!("stall-{i}"),
            region: "x".into(),
            size: "x".into(),
            num_nodes: 1,
            tags: vec![],
            admin: pgplane_core::store::AdminConnection {
                host: "127.0.0.1".into(),
                port: *port,
                user: "postgres".into(),
                password: "pw".into(),
                database: "postgres".into(),
                sslmode: "disable".into(),
                ca_certificate: None,
            },
            primary_user: "doadmin".into(),
            primary_credentials: pgplane_core::passwords::new_credentials().await,
            default_database: "defaultdb".into(),
            server_version_num: 170000,
            server_version: "17.0".into(),
            server_id: format!("stall:{port}"),
            rules: vec![],
        };
        app.store.insert_cluster(&new, &app.sealer).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let name = app.unique("unhindered");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "this team's write was held up: {body}");
    assert!(app.role_exists(&name).await);

    // The stalled passes end by pgplane's own deadline and say why.
    let ended = app
        .eventually(Duration::from_secs(60), || async {
            let errors: Vec<Option<String>> =
                sqlx::query_scalar("select last_error from clusters where team_id = $1")
                    .bind(team)
                    .fetch_all(app.store.pool())
                    .await
                    .unwrap();
            errors.iter().all(|e| {
                e.as_deref().is_some_and(|e| e.contains("did not answer") || e.contains("timed out"))
            })
        })
        .await;
    assert!(ended, "every stalled pass ended with an error");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_now_leads_to_another_server_is_left_alone() {
    if !two_servers() {
        return;
    }
    let app = TestApp::spawn(15).await;
    // The cluster's address comes to lead to another server (DNS, a re-used port) on which the
    // same admin credentials happen to work.
    let other = servers().target(17).clone();
    admin_on(17, &app.admin_user, &app.admin_password).await;
    sqlx::query("update clusters set port = $2 where cluster_id = $1::uuid")
        .bind(&app.cluster_id)
        .bind(i32::from(other.port))
        .execute(app.store.pool())
        .await
        .unwrap();
    let name = app.unique("elsewhere");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "pending", "{body}");
    let error = body["user"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("is not the one this cluster is registered on"), "{body}");
    let on_other = |role: String| {
        let s = other.clone();
        async move {
            let sql = "SELECT 1 FROM pg_roles WHERE rolname = $1";
            s.admin("postgres").await.query(sql, &[&role]).await.unwrap().len()
        }
    };
    assert_eq!(on_other(name.clone()).await, 0, "nothing was created on the other server");
    assert_eq!(on_other(app.primary_user.clone()).await, 0);
    let (status, _) = app.delete(&app.cluster_path("")).await;
    assert_eq!(status, 204);
    other.admin("postgres").await.batch_execute(&format!("DROP ROLE {}", app.admin_user)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_one_server_stay_within_the_cap_however_many_clusters_it_hosts() {
    // Thirty clusters on one server, four passes at once, three sessions allowed there: passes
    // wait for a session (idle ones of other clusters give way) instead of opening more.
    const CAP: i64 = 3;
    let app = TestApp::spawn_with(AppOptions {
        max_concurrent_passes: 4,
        max_sessions_per_server: CAP as usize,
        ..Default::default()
    })
    .await;
    let watcher = app.target_admin("postgres").await;
    let count_sql = "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                     WHERE usename = $1 AND application_name LIKE 'pgplane/%'";
    let sessions =
        || async { watcher.query_one(count_sql, &[&app.admin_user]).await.unwrap().get::<_, i64>(0) };
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampling = {
        let (peak, sql, admin) = (peak.clone(), count_sql.to_string(), app.admin_user.clone());
        let sampler = app.target_admin("postgres").await;
        tokio::spawn(async move {
            loop {
                let n: i64 = sampler.query_one(&sql, &[&admin]).await.unwrap().get(0);
                peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut clusters = vec![app.cluster_id.clone()];
    for i in 1..30 {
        let (status, body) =
            app.post("/v2/databases", second_cluster(&app, &format!("f{i}"), "127.0.0.1", json!({}))).await;
        assert_eq!(status, 201, "{body}");
        clusters.push(body["database"]["id"].as_str().unwrap().to_string());
    }
    // Registration probes count against the cap too.
    let registering = peak.swap(0, std::sync::atomic::Ordering::Relaxed);
    assert!(registering <= CAP, "{registering} sessions while registering, cap {CAP}");

    // Writes to every cluster at once, each answered once applied.
    let writes = clusters.iter().flat_map(|id| (0..2).map(move |n| (id.clone(), n))).map(|(id, n)| {
        let app = &app;
        async move {
            let body = json!({"name": app.unique(&format!("u{n}_{}", &id[..8]))});
            let (status, body) = app.post(&format!("/v2/databases/{id}/users"), body).await;
            assert_eq!(status, 201, "{body}");
        }
    });
    futures::future::join_all(writes).await;
    let writing = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(writing <= CAP, "{writing} sessions on the server while writing, cap {CAP}");
    assert!(writing > 0, "the sampler saw pgplane's sessions");

    // Once idle, the pooled sessions close.
    assert!(
        app.eventually(Duration::from_secs(60), || async { sessions().await == 0 }).await,
        "idle sessions are closed"
    );
    sampling.abort();
}
