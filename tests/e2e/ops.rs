//! Operations that keep the tenant boundary: an audit log that records a change even when its
//! client hangs up, request ids the server controls, key rotation that leaves nothing under
//! the old key, and a sealed row that cannot be opened failing only its own object.

use std::io::Write;
use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use reqwest::Method;
use serde_json::json;

/// The audit row of a request: (action, object, status, request id).
async fn audit_rows(app: &TestApp, object: &str) -> Vec<(String, String, i32, Option<String>)> {
    sqlx::query_as(
        "select action, object, status, request_id from audit_events where object = $1 order by event_id",
    )
    .bind(object)
    .fetch_all(app.store.pool())
    .await
    .expect("audit rows")
}

/// Sends a POST with a JSON body over a bare connection and hangs up without reading the
/// answer, once the server has had time to start on it.
fn post_and_hang_up(app: &TestApp, path: &str, body: &str) {
    let address = app.base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        app.token,
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    stream.shutdown(std::net::Shutdown::Both).expect("hang up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_client_hung_up_is_still_audited() {
    // No reconciler after registration: the create waits its whole apply timeout for one, and
    // the client hangs up during that wait.
    let mut app = TestApp::spawn_with(AppOptions {
        register: false,
        reconciler: false,
        apply_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    app.register_then_stop_reconciling().await;

    let name = app.unique("hungup");
    let body = json!({ "name": name }).to_string();
    let path = app.cluster_path("/users");
    tokio::task::block_in_place(|| post_and_hang_up(&app, &path, &body));

    let audited =
        app.eventually(Duration::from_secs(20), || async { !audit_rows(&app, &name).await.is_empty() }).await;
    assert!(audited, "the create was audited although its client hung up");
    let rows = audit_rows(&app, &name).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].2), ("user.create", 201), "{rows:?}");
    assert!(rows[0].3.is_some(), "the server gave it a request id");
    let (status, user) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 200, "the change itself was committed: {user}");
}

/// Requests in flight together are written to the audit log together, and each is answered
/// only once its own record is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_together_are_each_audited_before_their_answer() {
    let app = TestApp::spawn(15).await;
    let names: Vec<String> = (0..12).map(|n| app.unique(&format!("together{n}"))).collect();
    let requests = names.iter().map(|name| {
        let app = &app;
        async move {
            let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
            assert_eq!(status, 201, "{body}");
            let rows = audit_rows(app, name).await;
            assert_eq!(rows.len(), 1, "{name}: recorded before the answer: {rows:?}");
            assert_eq!((rows[0].0.as_str(), rows[0].2), ("user.create", 201), "{rows:?}");
        }
    });
    futures::future::join_all(requests).await;
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": names[0] })).await;
    assert_eq!(status, 422, "{body}");
    let rows = audit_rows(&app, &names[0]).await;
    assert_eq!(rows.iter().map(|r| r.2).collect::<Vec<_>>(), [201, 422], "in order: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_short_plain_request_ids_from_clients_are_kept() {
    let app = TestApp::spawn(15).await;
    let invalid = |object: &str| json!({ "name": format!("pg_{object}") });
    let cases = [
        ("kept", "client-id_1.2".to_string(), true),
        ("long", "a".repeat(129), false),
        ("spaced", "two words".to_string(), false),
        ("forged", "x\",\"admin\":\"yes".to_string(), false),
    ];
    for (object, sent, kept) in cases {
        let response = app
            .http
            .request(Method::POST, format!("{}{}", app.base_url, app.cluster_path("/users")))
            .bearer_auth(&app.token)
            .header("x-request-id", &sent)
            .json(&invalid(object))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 422, "{object}");
        let answered = response.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["request_id"], answered.as_str(), "{object}: the error body carries the same id");
        if kept {
            assert_eq!(answered, sent);
        } else {
            assert!(
                uuid::Uuid::parse_str(&answered).is_ok(),
                "{object}: replaced by the server's id: {answered}"
            );
        }
        let rows = audit_rows(&app, &format!("pg_{object}")).await;
        assert_eq!(rows.len(), 1, "{object}: {rows:?}");
        assert_eq!(rows[0].3.as_deref(), Some(answered.as_str()), "{object}: the audit log has the same id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_credentials_cannot_be_opened_fails_alone() {
    let app = TestApp::spawn(15).await;
    let broken = app.unique("broken");
    app.create_user(&broken).await;
    // Its row sealed under a key pgplane does not have (a rotation that missed it).
    let stranger =
        pgplane_core::secrets::Sealer::from_base64(&pgplane_core::secrets::Sealer::generate_key()).unwrap();
    let cluster_id = uuid::Uuid::parse_str(&app.cluster_id).unwrap();
    let context = pgplane_core::model::User::credentials_context(cluster_id, &broken);
    sqlx::query("update cluster_users set credentials_sealed = $3 where cluster_id = $1 and name = $2")
        .bind(cluster_id)
        .bind(&broken)
        .bind(stranger.seal(b"{}", &context))
        .execute(app.store.pool())
        .await
        .unwrap();

    // The rest of the cluster is still reconciled: a new user and a new database are made.
    let fine = app.unique("fine");
    let password = app.create_user(&fine).await;
    let db = app.unique("stilldb");
    app.create_db(&db).await;
    assert!(
        app.target.login(&fine, &password, &db).await.is_ok(),
        "the new user logs in to the new database"
    );
    app.reconciler.reconcile_now(cluster_id).await.unwrap();

    // The broken user carries the error; the listing still answers, without its password.
    let (status, body) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(status, 200, "{body}");
    let users = body["users"].as_array().unwrap();
    let shown = users.iter().find(|u| u["name"] == broken.as_str()).expect("listed");
    assert!(shown["password"].is_null(), "{shown}");
    assert!(shown["last_error"].as_str().is_some_and(|e| e.contains("secret")), "{shown}");
    let stored: (Option<String>,) =
        sqlx::query_as("select last_error from cluster_users where cluster_id = $1 and name = $2")
            .bind(cluster_id)
            .bind(&broken)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(stored.0.is_some_and(|e| e.contains("decrypted")), "the reconciler recorded it on the user");
    let others = users.iter().filter(|u| u["name"] != broken.as_str());
    assert!(others.clone().all(|u| u["status"] == "ready" && u["password"].is_string()), "{body}");
    assert!(app.role_exists(&broken).await, "its role on the target is left alone");
}

/// The roles and databases on `server` named with `suffix`.
async fn named_with(server: &pgplane_testkit::PgServer, suffix: &str) -> Vec<String> {
    let admin = server.admin("postgres").await;
    let sql = "SELECT rolname::text FROM pg_roles WHERE right(rolname, length($1)) = $1
               UNION ALL SELECT datname::text FROM pg_database WHERE right(datname, length($1)) = $1";
    admin.query(sql, &[&suffix]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_panics_leaves_no_role_or_database_behind() {
    let (made, learned) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let app = TestApp::spawn(17).await;
        app.create_user(&app.unique("leftover")).await;
        app.create_db(&app.unique("leftoverdb")).await;
        // A role of the test's own that owns objects in a database that stays, and holds a
        // privilege on one.
        let owner = app.unique("owner");
        let admin = app.target_admin("postgres").await;
        admin.batch_execute(&format!("CREATE ROLE {owner} LOGIN PASSWORD 'known-pw'")).await.unwrap();
        admin
            .batch_execute(&format!(
                "CREATE TABLE {owner}_t (id int); ALTER TABLE {owner}_t OWNER TO {owner}"
            ))
            .await
            .unwrap();
        admin.batch_execute(&format!("GRANT CONNECT ON DATABASE postgres TO {owner}")).await.unwrap();
        let before = [
            named_with(&app.target, &app.suffix).await,
            named_with(&pgplane_testkit::servers().metadata, &app.suffix).await,
        ]
        .concat();
        let _ = made.send((app.suffix.clone(), app.target.clone(), before));
        panic!("this test fails on purpose, with its pgplane still running");
    });
    assert!(test.await.unwrap_err().is_panic());
    let (suffix, target, before) = learned.await.unwrap();
    for expected in
        ["adm_", "doadmin_", "defaultdb_", "pgplane_meta_", "pgplane_test_", "leftover_", "owner_"]
    {
        assert!(before.iter().any(|n| n.starts_with(expected)), "the test had made {expected}…: {before:?}");
    }
    assert_eq!(named_with(&target, &suffix).await, Vec::<String>::new(), "left on the target");
    assert_eq!(
        named_with(&pgplane_testkit::servers().metadata, &suffix).await,
        Vec::<String>::new(),
        "left on the metadata server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_run_left_is_swept_and_a_live_test_is_not() {
    let live = TestApp::spawn(15).await;
    // What a test killed mid-way leaves: its markers, a superuser with a known password, a
    // database it owns; nobody claims its suffix any more.
    let server = pgplane_testkit::servers().metadata.clone();
    let dead = pgplane_testkit::unique_suffix();
    let admin = server.admin("postgres").await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE pgplane_meta_{dead} LOGIN PASSWORD 'known-pw';
             CREATE ROLE adm_{dead} SUPERUSER LOGIN PASSWORD 'known-pw'"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE pgplane_test_{dead} OWNER pgplane_meta_{dead}"))
        .await
        .unwrap();
    admin.batch_execute(&format!("CREATE DATABASE defaultdb_{dead} OWNER adm_{dead}")).await.unwrap();

    let swept = pgplane_testkit::cleanup::sweep_stale(&server).await.unwrap();
    assert!(swept.contains(&dead), "{swept:?}");
    assert!(!swept.contains(&live.suffix), "a live test is never swept");
    assert_eq!(named_with(&server, &dead).await, Vec::<String>::new());
    assert!(named_with(&server, &live.suffix).await.contains(&live.metadata_database()));
    let (status, _) = live.get("/v2/databases").await;
    assert_eq!(status, 200, "the live test's pgplane still works");
}
