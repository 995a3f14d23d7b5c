//! Users: created with LOGIN and nothing else, listed, shown, updated, password resets, and
//! deletion (also of users owning objects in several databases); the primary user stays.

use pgplane_testkit::{AppOptions, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{drift_described_once, encode, on_each_version, sqlstate};

async fn a_new_user_can_log_in_and_nothing_more(major: u32) {
    let app = TestApp::spawn(major).await;
    let name = app.unique("app");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    let user = &body["user"];
    assert_eq!(user["name"], name.as_str());
    assert_eq!(user["role"], "normal");
    assert_eq!(user["status"], "ready");
    assert_eq!(user["settings"]["pg_allow_replication"], false);
    let password = user["password"].as_str().unwrap();
    assert!(password.len() >= 20);

    let row = app
        .target_admin("postgres")
        .await
        .query_one(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
                    (SELECT rolpassword FROM pg_authid a WHERE a.oid = r.oid) LIKE 'SCRAM-SHA-256$%'
               FROM pg_roles r WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap();
    let attrs: Vec<bool> = (0..7).map(|i| row.get(i)).collect();
    assert_eq!(attrs, [true, false, false, false, false, false, true]);

    let client = app.target.login(&name, password, &app.default_db).await.expect("the new user logs in");
    let err = client.batch_execute(&format!("CREATE DATABASE {}", app.unique("nope"))).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let err = client.batch_execute(&format!("CREATE ROLE {}", app.unique("nope"))).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");

    // The target's log (log_statement=all) never saw the password or its verifier.
    let log = app.target.log();
    assert!(!log.contains(password));
    let leaked: Vec<&str> = log.lines().filter(|l| l.contains("SCRAM-SHA-256$4096:")).collect();
    assert!(leaked.is_empty(), "verifiers in the server log: {leaked:?}");
}
on_each_version!(a_new_user_can_log_in_and_nothing_more);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_and_shown_and_duplicates_refused() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("lister");
    let password = app.create_user(&name).await;
    let (status, body) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> =
        body["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    names.sort();
    let mut expected = vec![app.primary_user.as_str(), name.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    let (status, body) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["password"], password.as_str());

    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 422);
    assert_eq!(body["id"], "unprocessable_entity");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "invalid request: user_name field required");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": 42 })).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.post(&app.cluster_path("/users"), json!({ "name": app.primary_user })).await;
    assert_eq!(status, 422);
    // The password PyDo and doctl show is still the one that works.
    assert!(app.target.login(&name, &password, &app.default_db).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_reserved_names_are_refused_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    // Other tests share the server: count only this test's roles.
    let count = "SELECT count(*)::text FROM pg_roles WHERE rolname LIKE $1";
    let mine = format!("%{}%", app.suffix);
    let before = app.target_strings(count, &[&mine]).await;
    let too_long = format!("{}{}", "a".repeat(64 - app.suffix.len()), app.suffix);
    for name in [
        String::new(),
        too_long,
        format!("pg_{}", app.suffix),
        "postgres".into(),
        "public".into(),
        "PUBLIC".into(),
        "current_user".into(),
        app.admin_user.clone(),
        format!("a\u{0}{}", app.suffix),
        format!("new\nline{}", app.suffix),
        format!(" {}", app.suffix),
    ] {
        let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
        assert_eq!(status, 422, "{name:?}: {body}");
        assert_eq!(body["id"], "unprocessable_entity");
    }
    assert_eq!(app.target_strings(count, &[&mine]).await, before);
    assert!(!app.role_exists("current_user").await);
    let (_, body) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_but_valid_names_round_trip_exactly() {
    let app = TestApp::spawn(17).await;
    let s = &app.suffix;
    let names = [
        format!("x\"; DROP ROLE postgres; --{s}"),
        format!("o'brien {s}"),
        format!("back\\slash{s}"),
        format!("名前-🐘-{s}"),
        format!("a/b?c%d#e{s}"),
        format!("{}{s}", "q".repeat(63 - s.len())),
        format!("MixedCase{s}"),
    ];
    for name in &names {
        assert!(name.len() <= 63);
        let password = app.create_user(name).await;
        let found =
            app.target_strings("SELECT rolname::text FROM pg_roles WHERE rolname = $1", &[name]).await;
        assert_eq!(found, [name.as_str()], "exactly this role exists");
        assert!(app.target.login(name, &password, &app.default_db).await.is_ok(), "{name}");
        let (status, body) = app.get(&app.cluster_path(&format!("/users/{}", encode(name)))).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["user"]["name"], name.as_str());
        app.create_db(name).await;
        assert!(app.database_exists(name).await);
        let (status, _) = app.delete(&app.cluster_path(&format!("/dbs/{}", encode(name)))).await;
        assert_eq!(status, 204);
        let (status, _) = app.delete(&app.cluster_path(&format!("/users/{}", encode(name)))).await;
        assert_eq!(status, 204);
        assert!(!app.role_exists(name).await, "{name}");
        assert!(!app.database_exists(name).await, "{name}");
    }
    assert!(app.role_exists("postgres").await);
}

async fn replication_is_granted_and_revoked_by_update(major: u32) {
    // Where the operator allows it, for a cluster alone on its server (see tenancy::powers).
    let options =
        AppOptions { target_major: major, allow_replication_for_sole_tenants: true, ..Default::default() };
    let app = TestApp::spawn_with(options).await;
    let name = app.unique("replica");
    app.create_user(&name).await;
    let path = app.cluster_path(&format!("/users/{name}"));
    let replication = "SELECT rolreplication::text FROM pg_roles WHERE rolname = $1";

    let (status, body) = app.put(&path, json!({"settings": {"pg_allow_replication": true}})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["settings"]["pg_allow_replication"], true);
    assert_eq!(app.target_strings(replication, &[&name]).await, ["true"]);

    // DigitalOcean semantics: an update without the flag revokes it.
    let (status, _) = app.put(&path, json!({"settings": {}})).await;
    assert_eq!(status, 201);
    assert_eq!(app.target_strings(replication, &[&name]).await, ["false"]);

    let (status, body) = app.put(&path, json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "invalid request: settings field required");
    let primary = app.cluster_path(&format!("/users/{}", app.primary_user));
    let (status, _) = app.put(&primary, json!({"settings": {"pg_allow_replication": true}})).await;
    assert_eq!(status, 422);
}
on_each_version!(replication_is_granted_and_revoked_by_update);

async fn a_password_reset_replaces_the_old_password_at_once(major: u32) {
    let app = TestApp::spawn(major).await;
    let name = app.unique("resetme");
    let old = app.create_user(&name).await;
    let (status, body) = app.post(&app.cluster_path(&format!("/users/{name}/reset_auth")), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let new = body["user"]["password"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(app.target.login(&name, &new, &app.default_db).await.is_ok());
    let err = app.target.login(&name, &old, &app.default_db).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01", "{err}");

    // The primary user can be reset too; the cluster's connection follows.
    let old_primary = app.primary_password().await;
    let path = app.cluster_path(&format!("/users/{}/reset_auth", app.primary_user));
    let (status, body) = app.post(&path, json!({})).await;
    assert_eq!(status, 200);
    let new_primary = body["user"]["password"].as_str().unwrap().to_string();
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    assert_eq!(cluster["database"]["connection"]["password"], new_primary.as_str());
    assert!(app.target.login(&app.primary_user, &new_primary, &app.default_db).await.is_ok());
    assert!(app.target.login(&app.primary_user, &old_primary, &app.default_db).await.is_err());

    let log = app.target.log();
    for secret in [&old, &new, &old_primary, &new_primary] {
        assert!(!log.contains(secret.as_str()));
    }
    let (status, body) = app.post(&app.cluster_path("/users/nobody/reset_auth"), json!({})).await;
    assert_eq!((status, body["id"].as_str()), (404, Some("not_found")));
}
on_each_version!(a_password_reset_replaces_the_old_password_at_once);

async fn deleting_a_user_that_owns_objects_in_several_databases(major: u32) {
    // pgplane finds where in pg_shdepend; the databases it owns nothing in are not visited.
    let app = TestApp::spawn(major).await;
    let name = app.unique("owner");
    let password = app.create_user(&name).await;
    let other_db = app.unique("second");
    app.create_db(&other_db).await;
    let mut sessions = Vec::new();
    for db in [app.default_db.clone(), other_db.clone()] {
        app.target_admin(&db)
            .await
            .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO \"{name}\""))
            .await
            .unwrap();
        let user = app.target.login(&name, &password, &db).await.unwrap();
        user.batch_execute("CREATE TABLE owned_things (id int); CREATE SEQUENCE owned_seq").await.unwrap();
        sessions.push(user);
    }
    // A privilege on a shared object (a database) is revoked too, or DROP ROLE would refuse.
    app.target_admin(&app.default_db)
        .await
        .batch_execute(&format!("GRANT CONNECT ON DATABASE \"{other_db}\" TO \"{name}\""))
        .await
        .unwrap();
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 204, "{body}");
    assert!(!app.role_exists(&name).await);
    for db in [&app.default_db, &other_db] {
        let owner: String = app
            .target_admin(db)
            .await
            .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'owned_things'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, app.primary_user, "objects in {db} go to the primary user");
    }
    // Its open sessions were ended.
    for session in &sessions {
        assert!(session.simple_query("SELECT 1").await.is_err());
    }
    let (status, _) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 404);
}
on_each_version!(deleting_a_user_that_owns_objects_in_several_databases);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_user_cannot_be_deleted() {
    let app = TestApp::spawn(15).await;
    let password = app.primary_password().await;
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{}", app.primary_user))).await;
    assert_eq!(status, 422);
    assert_eq!(body["id"], "unprocessable_entity");
    assert!(body["message"].as_str().unwrap().contains("primary user"));
    assert!(app.role_exists(&app.primary_user).await);
    assert!(app.target.login(&app.primary_user, &password, &app.default_db).await.is_ok());
    let (_, user) = app.get(&app.cluster_path(&format!("/users/{}", app.primary_user))).await;
    assert_eq!(user["user"]["status"], "ready");
}

async fn a_role_pgplane_does_not_manage_is_never_touched(major: u32) {
    let app = TestApp::spawn(major).await;
    let name = app.unique("stranger");
    app.target_admin("postgres")
        .await
        .batch_execute(&format!("CREATE ROLE {name} LOGIN CREATEDB PASSWORD 'strangers-own'"))
        .await
        .unwrap();
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["id"], "conflict");
    assert!(body["message"].as_str().unwrap().contains("not managed by pgplane"));
    let (status, _) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 404, "the refused user is not kept");
    assert!(app.target.login(&name, "strangers-own", "postgres").await.is_ok());
    let createdb =
        app.target_strings("SELECT rolcreatedb::text FROM pg_roles WHERE rolname = $1", &[&name]).await;
    assert_eq!(createdb, ["true"]);
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 404);
    assert!(app.role_exists(&name).await);
}
on_each_version!(a_role_pgplane_does_not_manage_is_never_touched);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_17_the_primary_user_can_manage_the_users_pgplane_creates() {
    let app = TestApp::spawn(17).await;
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    if cluster["database"]["version"].as_str().unwrap().parse::<u32>().unwrap() < 16 {
        eprintln!("skipped: the target (PGPLANE_TEST_PG_URL) runs PostgreSQL before 16");
        return;
    }
    let name = app.unique("managed");
    app.create_user(&name).await;
    let admin_option = app
        .target_strings(
            "SELECT m.admin_option::text FROM pg_auth_members m
               JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles p ON p.oid = m.member
              WHERE r.rolname = $1 AND p.rolname = $2",
            &[&name, &app.primary_user],
        )
        .await;
    assert_eq!(admin_option, ["true"]);
    let primary =
        app.target.login(&app.primary_user, &app.primary_password().await, &app.default_db).await.unwrap();
    primary.batch_execute(&format!("ALTER ROLE \"{name}\" CONNECTION LIMIT 5")).await.unwrap();
}

/// Hash hygiene: a password set by hand and stored as MD5 is drift; the next full pass puts
/// the user's SCRAM verifier back and says so.
async fn a_password_stored_as_md5_is_replaced_by_scram(major: u32) {
    let app = TestApp::spawn_with(AppOptions {
        target_major: major,
        resync_interval: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let name = app.unique("hashed");
    let password = app.create_user(&name).await;
    let admin = app.target_admin("postgres").await;
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'md5'; ALTER ROLE {name} PASSWORD 'md5-by-hand-secret'"
        ))
        .await
        .unwrap();
    let md5 = "SELECT (rolpassword LIKE 'md5%')::text FROM pg_authid WHERE rolname = $1";
    assert_eq!(app.target_strings(md5, &[&name]).await, ["true"]);
    let stored = "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = $1";
    let repaired = app
        .eventually(std::time::Duration::from_secs(20), || async {
            app.target_strings(stored, &[&name]).await == ["SCRAM-SHA-256$"]
        })
        .await;
    assert!(repaired, "the SCRAM verifier is back");
    assert!(app.target.login(&name, &password, &app.default_db).await.is_ok());
    assert!(app.target.login(&name, "md5-by-hand-secret", &app.default_db).await.is_err());
    let recorded = |d: &str| d == "the password was stored as MD5";
    assert_eq!(drift_described_once(&app, &name, recorded).await, ["the password was stored as MD5"]);
}
on_each_version!(a_password_stored_as_md5_is_replaced_by_scram);

/// A cluster's users listing, as `base` answers it to `token`: status and users by name.
async fn listing(app: &TestApp, base: &str, token: &str) -> (u16, std::collections::BTreeMap<String, Value>) {
    let response = app
        .http
        .get(format!("{base}{}", app.cluster_path("/users")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let users = body["users"].as_array().cloned().unwrap_or_default();
    (status, users.into_iter().map(|u| (u["name"].as_str().unwrap().to_string(), u)).collect())
}

/// A cluster's own answer, as `base` answers it to `token`: its users by name, and the password
/// in its connection.
async fn cluster_answer(
    app: &TestApp,
    base: &str,
    token: &str,
) -> (std::collections::BTreeMap<String, Value>, Value) {
    let path = format!("{base}/v2/databases/{}", app.cluster_id);
    let body: Value = app.http.get(path).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    let users = body["database"]["users"].as_array().cloned().unwrap_or_default();
    let users = users.into_iter().map(|u| (u["name"].as_str().unwrap().to_string(), u)).collect();
    (users, body["database"]["connection"]["password"].clone())
}

/// Users lists are kept rendered between requests (`gateway/src/rendered.rs`), in the users
/// listing and in the cluster's own answer; every change made
/// since, through this replica, another one or by any writer of the metadata database, shows
/// at once, and a kept listing is given neither to another team nor without the passwords'
/// scope to a caller who lacks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_listing_shows_every_change_at_once_whoever_made_it() {
    let app = TestApp::spawn(15).await;
    let second = app.second_gateway().await;
    let (first, token) = (app.base_url.as_str(), app.token.as_str());
    let a = app.unique("kept_a");
    app.create_user(&a).await;
    let (_, before) = listing(&app, first, token).await;
    let (_, again) = listing(&app, first, token).await;
    assert_eq!(before, again, "nothing changed");
    let (in_cluster, _) = cluster_answer(&app, first, token).await;
    assert_eq!(in_cluster.len(), before.len());

    // Through the other replica: a new user, a reset password, new settings, a new database.
    let b = app.unique("kept_b");
    let call = |method: Method, path: String, body: Option<Value>| {
        let mut request = app.http.request(method, format!("{second}{path}")).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = call(Method::POST, app.cluster_path("/users"), Some(json!({ "name": b }))).await;
    assert_eq!(status, 201, "{body}");
    let (status, reset) =
        call(Method::POST, app.cluster_path(&format!("/users/{a}/reset_auth")), Some(json!({}))).await;
    assert_eq!(status, 200, "{reset}");
    let (status, body) = call(
        Method::PUT,
        app.cluster_path(&format!("/users/{a}")),
        Some(json!({ "settings": { "connection_limit": 7 } })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let db = app.unique("kept_db");
    let (status, body) = call(Method::POST, app.cluster_path("/dbs"), Some(json!({ "name": db }))).await;
    assert_eq!(status, 201, "{body}");
    let (_, after) = listing(&app, first, token).await;
    assert!(after.contains_key(&b), "the user made through the other replica is listed");
    assert_eq!(after[&a]["password"], reset["user"]["password"], "the new password is shown");
    assert_eq!(after[&a]["settings"]["connection_limit"], 7);
    let owned = after[&app.primary_user]["access"].as_array().unwrap();
    assert!(owned.iter().any(|e| e["database"] == db.as_str()), "the primary user owns the new database");
    let (in_cluster, _) = cluster_answer(&app, first, token).await;
    assert!(in_cluster.contains_key(&b), "the cluster's answer lists the new user too");
    assert_eq!(in_cluster[&a]["password"], reset["user"]["password"]);
    let path = app.cluster_path(&format!("/users/{}/reset_auth", app.primary_user));
    let (status, primary) = call(Method::POST, path, Some(json!({}))).await;
    assert_eq!(status, 200, "{primary}");
    let (in_cluster, connection_password) = cluster_answer(&app, first, token).await;
    assert_eq!(in_cluster[&app.primary_user]["password"], primary["user"]["password"]);
    assert_eq!(connection_password, primary["user"]["password"], "the connection has the new password");

    // Any writer of the metadata database, not only the API: here a row changed by hand.
    sqlx::query("update cluster_users set last_error = 'changed by hand' where name = $1")
        .bind(&a)
        .execute(app.store.pool())
        .await
        .unwrap();
    let (_, after) = listing(&app, first, token).await;
    assert_eq!(after[&a]["last_error"], "changed by hand");

    // A deletion through the other replica.
    let (status, body) = call(Method::DELETE, app.cluster_path(&format!("/users/{b}")), None).await;
    assert_eq!(status, 204, "{body}");
    let (_, after) = listing(&app, first, token).await;
    assert!(!after.contains_key(&b), "the deleted user is gone");

    // Who may see what: the kept listing with passwords is not given to a reader without the
    // credentials scope, nor to another team, whose answer is 404.
    let reader = app.issue_token("default", &["database:read"]).await;
    let (status, read) = listing(&app, first, &reader).await;
    assert_eq!(status, 200);
    assert!(read.values().all(|u| u.get("password").is_none()), "no passwords without the scope");
    let (in_cluster, connection_password) = cluster_answer(&app, first, &reader).await;
    assert!(in_cluster.values().all(|u| u.get("password").is_none()));
    assert!(connection_password.is_null(), "{connection_password}");
    let (_, with) = listing(&app, first, token).await;
    assert!(with[&a]["password"].is_string(), "and the kept answer with them is still whole");
    let stranger = app.issue_token(&app.unique("team"), &["*"]).await;
    let (status, none) = listing(&app, first, &stranger).await;
    assert_eq!((status, none.len()), (404, 0));
    let (in_cluster, _) = cluster_answer(&app, first, &stranger).await;
    assert!(in_cluster.is_empty(), "another team sees no cluster");
}

/// The cluster's generation and the one its passes have carried out.
async fn cluster_generations(app: &TestApp) -> (i64, i64) {
    let id: uuid::Uuid = app.cluster_id.parse().unwrap();
    sqlx::query_as("select generation, reconciled_generation from clusters where cluster_id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

/// Waits for the passes to carry out the cluster's generation `expected`, checking that it
/// stays the generation meanwhile (a pass does not bump it).
async fn carried_out_at(app: &TestApp, expected: i64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (generation, reconciled) = cluster_generations(app).await;
        assert_eq!(generation, expected, "{what}");
        if reconciled == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not carried out ({reconciled})");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A write to a cluster's users or databases bumps the cluster's generation once, at its
/// commit, however many statements and rows its transaction wrote (a user with parameters,
/// new settings with new parameters); the pass that carries it out leaves the generation as
/// it is. A raised generation written by hand wakes the reconcilers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_bumps_its_cluster_once_at_commit_and_its_pass_does_not() {
    let app = TestApp::spawn(15).await;
    let (start, _) = cluster_generations(&app).await;
    carried_out_at(&app, start, "registered").await;
    let name = app.unique("bumped");
    let db = app.default_db.clone();
    let parameters = json!([{"name": "work_mem", "value": "8MB", "database": db},
                            {"name": "statement_timeout", "value": "1s"}]);
    let (status, body) = app
        .post(&app.cluster_path("/users"), json!({"name": name, "settings": {"parameters": parameters}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["settings"]["parameters"].as_array().unwrap().len(), 2, "{body}");
    carried_out_at(&app, start + 1, "a user with parameters").await;

    let path = app.cluster_path(&format!("/users/{name}"));
    let settings =
        json!({"settings": {"connection_limit": 3, "parameters": [{"name": "work_mem", "value": "4MB"}]}});
    let (status, body) = app.put(&path, settings).await;
    assert_eq!(status, 201, "{body}");
    carried_out_at(&app, start + 2, "settings and parameters, three statements").await;
    let (status, body) = app.post(&format!("{path}/reset_auth"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    carried_out_at(&app, start + 3, "a reset").await;

    // By hand: the user's generation raised in the metadata database.
    sqlx::query("update cluster_users set generation = generation + 1 where name = $1")
        .bind(&name)
        .execute(app.store.pool())
        .await
        .unwrap();
    carried_out_at(&app, start + 4, "a write by hand").await;

    let (status, body) = app.delete(&path).await;
    assert_eq!(status, 204, "{body}");
    carried_out_at(&app, start + 5, "a deletion").await;
    let gone = "SELECT count(*) FROM pg_roles WHERE rolname = $1";
    let left: i64 = app.target_admin("postgres").await.query_one(gone, &[&name]).await.unwrap().get(0);
    assert_eq!(left, 0);
}
