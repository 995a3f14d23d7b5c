//! Convergence when things go wrong: an unreachable target leaves objects pending with their
//! error and converges once it is back; changes made behind pgplane's back are repaired. And
//! the metadata store's writers: the order they take rows in, their batches, their plans.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

use crate::on_each_version;

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

    // The drift is visible through the API: what, when found, when repaired.
    let (status, body) = app.get(&app.cluster_path("/drift")).await;
    assert_eq!(status, 200);
    let events = body["drift_events"].as_array().unwrap();
    let found: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (e["kind"].as_str().unwrap(), e["name"].as_str().unwrap(), e["description"].as_str().unwrap())
        })
        .collect();
    assert!(found.contains(&("user", name.as_str(), "the role was missing on the target")), "{body}");
    assert!(found.contains(&("database", db.as_str(), "the database was missing on the target")), "{body}");
    assert!(
        found.contains(&("user", name.as_str(), "CREATEDB was granted, the password was changed")),
        "{body}"
    );
    assert!(events.iter().all(|e| e["found_at"].is_string() && e["repaired_at"].is_string()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_roles_and_databases_are_listed_and_left_alone() {
    let app =
        TestApp::spawn_with(AppOptions { resync_interval: Duration::from_secs(1), ..Default::default() })
            .await;
    let mine = app.unique("mine");
    app.create_user(&mine).await;
    let stranger = app.unique("stranger");
    let their_db = app.unique("theirdb");
    let admin = app.target_admin("postgres").await;
    admin
        .batch_execute(&format!("CREATE ROLE {stranger} LOGIN CREATEDB PASSWORD 'their-own'"))
        .await
        .unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {their_db} OWNER {stranger}")).await.unwrap();
    let (status, body) = app.get(&app.cluster_path("/unmanaged")).await;
    assert_eq!(status, 200, "{body}");
    let roles: Vec<&str> = body["roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    let dbs: Vec<&str> = body["databases"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(roles.contains(&stranger.as_str()) && roles.contains(&app.admin_user.as_str()));
    assert!(!roles.contains(&mine.as_str()) && !roles.contains(&app.primary_user.as_str()));
    assert!(dbs.contains(&their_db.as_str()) && !dbs.contains(&app.default_db.as_str()));
    // Several drift passes later, the stranger's role and database are exactly as they were.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(app.target.login(&stranger, "their-own", &their_db).await.is_ok());
    let attrs =
        app.target_strings("SELECT rolcreatedb::text FROM pg_roles WHERE rolname = $1", &[&stranger]).await;
    assert_eq!(attrs, ["true"]);
    let owner = app
        .target_strings(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&their_db],
        )
        .await;
    assert_eq!(owner, [stranger.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_admin_password_backs_off_then_recovers_when_the_registration_is_updated() {
    let app =
        TestApp::spawn_with(AppOptions { apply_timeout: Duration::from_secs(2), ..Default::default() }).await;
    let admin = app.target_admin("postgres").await;
    let verifier = pgplane_core::passwords::scram_verifier("rotated-by-the-dba");
    // The DBA's change, kept out of the server log as pgplane keeps its own (leak tests read it).
    admin.batch_execute(pgplane_target_server::sql::QUIET).await.unwrap();
    admin.batch_execute(&format!("ALTER ROLE {} PASSWORD '{verifier}'", app.admin_user)).await.unwrap();
    admin.batch_execute(pgplane_target_server::sql::LOUD).await.unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
            app.admin_user
        ))
        .await
        .unwrap();
    let name = app.unique("waiting");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201);
    assert_eq!(body["user"]["status"], "pending");
    let stats = app.reconciler.stats();
    let before = stats.passes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let passes = stats.passes.load(Ordering::Relaxed) - before;
    assert!(passes <= 4, "{passes} passes in 6 s: backoff, not a tight loop");
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    let error = cluster["database"]["pgplane"]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("password authentication failed"), "{error}");

    let mut registration = app.registration("ignored")["pgplane"].clone();
    registration["password"] = json!("rotated-by-the-dba");
    let (status, body) = app.put(&app.cluster_path("/pgplane"), registration.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["database"]["pgplane"].get("last_error").is_none(), "{body}");
    let converged = app
        .eventually(Duration::from_secs(10), || async {
            app.get(&app.cluster_path(&format!("/users/{name}"))).await.1["user"]["status"] == "ready"
        })
        .await;
    assert!(converged && app.role_exists(&name).await);
    registration["password"] = json!("still-wrong");
    let (status, body) = app.put(&app.cluster_path("/pgplane"), registration).await;
    assert_eq!(status, 422, "a connection that does not work is refused: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_of_one_user_make_exactly_one() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("racer");
    let path = app.cluster_path("/users");
    let attempts = (0..50).map(|_| app.post(&path, json!({ "name": name })));
    let answers = futures::future::join_all(attempts).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "exactly one create succeeds");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 422, "{body}");
        assert!(body["message"].as_str().unwrap().contains("already exists"), "{body}");
    }
    let roles = app.target_strings("SELECT rolname::text FROM pg_roles WHERE rolname = $1", &[&name]).await;
    assert_eq!(roles.len(), 1);
    let winner = &answers.iter().find(|(s, _)| *s == 201).unwrap().1;
    let password = winner["user"]["password"].as_str().unwrap();
    assert!(app.target.login(&name, password, &app.default_db).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_over_a_converged_cluster_issues_no_ddl() {
    let app = TestApp::spawn(17).await;
    app.create_user(&app.unique("quiet")).await;
    app.create_db(&app.unique("quietdb")).await;
    let stats = app.reconciler.stats();
    let cluster = app.cluster_id.parse().unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    let (ddl, passes) = (stats.ddl_steps.load(Ordering::Relaxed), stats.passes.load(Ordering::Relaxed));
    // Each call runs a pass of its own, waiting for the loop's if one runs.
    for _ in 0..3 {
        app.reconciler.reconcile_now(cluster).await.unwrap();
    }
    assert!(stats.passes.load(Ordering::Relaxed) >= passes + 3);
    assert_eq!(stats.ddl_steps.load(Ordering::Relaxed), ddl, "nothing to do, nothing done");
    // Readiness reports both halves.
    let ready: serde_json::Value =
        app.http.get(format!("{}/readyz", app.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({"status": "ready", "metadata_database": "ok", "reconciler": "ok"}));
}

/// Takes `cluster`'s lock as another process would, once the loop, which may still be passing
/// over the new cluster, lets go of it.
async fn lock_once_free(app: &TestApp, cluster: uuid::Uuid) -> pgplane_core::store::ClusterLock {
    for _ in 0..200 {
        if let Some(held) = app.store.try_lock_cluster(cluster).await.unwrap() {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the loop did not let go of the cluster's lock within 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_asked_for_while_the_clusters_lock_is_held_runs_once_it_is_free() {
    // `reconcile_now` says a pass ran: while another session holds the cluster's lock (another
    // process, or this one's loop), it waits for it rather than answer without a pass.
    let app = TestApp::spawn(15).await;
    let cluster = app.cluster_id.parse().unwrap();
    let held = lock_once_free(&app, cluster).await;
    let stats = app.reconciler.stats();
    let passes = stats.passes.load(Ordering::Relaxed);
    let reconciler = app.reconciler.clone();
    let asked = tokio::spawn(async move { reconciler.reconcile_now(cluster).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!asked.is_finished(), "the call answered while the lock was held elsewhere");
    assert_eq!(stats.passes.load(Ordering::Relaxed), passes, "no pass ran meanwhile");
    held.unlock().await;
    asked.await.unwrap().expect("the pass ran once the lock was free");
    assert!(stats.passes.load(Ordering::Relaxed) > passes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_on_one_metadata_database_never_apply_a_change_twice() {
    let app = TestApp::spawn(15).await;
    let process = app.start_reconciler(pgplane_reconciler::ReconcilerConfig::default());
    let second = process.reconciler.clone();
    let (first_before, second_before) = (
        app.reconciler.stats().ddl_steps.load(Ordering::Relaxed),
        second.stats().ddl_steps.load(Ordering::Relaxed),
    );
    let names: Vec<String> = (0..30).map(|i| app.unique(&format!("twin{i}"))).collect();
    let path = app.cluster_path("/users");
    let creates = names.iter().map(|n| app.post(&path, json!({ "name": n })));
    for (status, body) in futures::future::join_all(creates).await {
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["user"]["status"], "ready", "{body}");
    }
    let applied = app.reconciler.stats().ddl_steps.load(Ordering::Relaxed) - first_before
        + second.stats().ddl_steps.load(Ordering::Relaxed)
        - second_before;
    assert_eq!(applied, 30, "each CREATE ROLE issued exactly once between the two");
    let count = "SELECT count(*)::text FROM pg_roles WHERE rolname LIKE $1";
    assert_eq!(app.target_strings(count, &[&format!("twin%_{}", app.suffix)]).await, ["30"]);
    process.stop().await.unwrap();
}

/// A process kept out of a busy cluster by another session's lock (another process at work on
/// it) leaves the cluster alone for a moment at a time: it used to read the due list and try
/// the lock again as fast as the metadata database answered, over a thousand times a second,
/// taking the cores the work needed (three processes were slower than one). Once the lock is
/// free it takes the cluster and applies what waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_kept_out_of_a_cluster_leaves_it_alone_until_its_turn() {
    let app = TestApp::spawn(17).await;
    let cluster = app.cluster_id.parse().unwrap();
    let held = lock_once_free(&app, cluster).await;
    let stats = app.reconciler.stats();
    let before = stats.lock_held_elsewhere.load(Ordering::Relaxed);
    let name = app.unique("kept");
    let path = app.cluster_path("/users");
    let create = app.post(&path, json!({ "name": name }));
    let release = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tries = stats.lock_held_elsewhere.load(Ordering::Relaxed) - before;
        held.unlock().await;
        tries
    };
    let ((status, body), tries) = tokio::join!(create, release);
    assert!(tries >= 1, "the write woke the reconciler, which found the lock taken");
    assert!(tries <= 250, "{tries} tries of the lock in a second it was held elsewhere");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "applied once the lock was free: {body}");
    let password = body["user"]["password"].as_str().unwrap();
    assert!(app.target.login(&name, password, &app.default_db).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_digitalocean_errors_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    let url = format!("{}{}", app.base_url, app.cluster_path("/users"));
    let send = |body: Vec<u8>, content_type: &'static str| {
        let request =
            app.http.post(&url).bearer_auth(&app.token).header("content-type", content_type).body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("a JSON error body");
            (status, body)
        }
    };
    for (body, expected) in [
        (b"{\"name\":".to_vec(), 400),
        (b"not json at all".to_vec(), 400),
        (b"[1, 2, 3]".to_vec(), 422),
        (b"{\"name\": 5}".to_vec(), 422),
        (b"{\"name\": [\"a\"]}".to_vec(), 422),
        (b"{\"name\": null}".to_vec(), 422),
        (b"{\"settings\": {\"pg_allow_replication\": \"yes\"}, \"name\": \"x\"}".to_vec(), 422),
        // Over the 64 KiB limit: the rest of the body is read and thrown away before the
        // answer, so that the client, still writing it, gets the 413.
        (vec![b'a'; 80_000], 413),
        (vec![b'a'; 2_000_000], 413),
        (b"\xff\xfe\x00".to_vec(), 400),
    ] {
        let (status, answer) = send(body, "application/json").await;
        assert_eq!(status, expected, "{answer}");
        assert!(
            answer["id"].is_string() && answer["message"].is_string() && answer["request_id"].is_string()
        );
    }
    let (status, _) =
        send(format!("{{\"name\": \"{}\"}}", app.unique("plain")).into_bytes(), "text/plain").await;
    assert_eq!(status, 201, "a JSON body is read whatever its Content-Type");
    let (_, users) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "only the well-formed request created a user");
}

/// A pgplane without its reconciler (a test plays the passes' part against the store), and a
/// cluster registered through the API, never passed over.
async fn registered_without_reconciler() -> (TestApp, uuid::Uuid) {
    let app = TestApp::spawn_with(AppOptions {
        reconciler: false,
        register: false,
        apply_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let (status, body) = app.post("/v2/databases", app.registration(&format!("c-{}", app.suffix))).await;
    assert_eq!(status, 201, "{body}");
    let id = body["database"]["id"].as_str().unwrap().parse().unwrap();
    (app, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pass_over_the_old_target_does_not_count_as_the_new_targets_resync() {
    // No reconciler: the test plays the passes' part against the store.
    let (app, id) = registered_without_reconciler().await;
    let resynced = |cluster: pgplane_core::model::Cluster| cluster.last_resync_at.is_some();
    let read = app.store.cluster_by_id(id).await.unwrap().unwrap();
    assert!(!resynced(read.clone()), "registered, never passed over");
    let resync = Duration::from_secs(3600);
    app.store.finish_pass(&read, &[], None, true, None, None, chrono::Utc::now(), resync).await.unwrap();
    assert!(resynced(app.store.cluster_by_id(id).await.unwrap().unwrap()), "a full pass resyncs");

    // A full pass starts, then the registration is pointed at a new server, then the pass ends.
    let seen_by_pass = app.store.cluster_by_id(id).await.unwrap().unwrap();
    let admin = admin_connection(&app);
    let update = pgplane_core::store::TargetUpdate {
        admin: &admin,
        server_version_num: seen_by_pass.server_version_num,
        server_version: &seen_by_pass.server_version,
        server_id: seen_by_pass.server_id.as_deref().unwrap(),
    };
    app.store.update_target(&seen_by_pass, &update, false, &app.sealer).await.unwrap();
    let finished = app
        .store
        .finish_pass(&seen_by_pass, &[], None, true, None, None, chrono::Utc::now(), resync)
        .await
        .unwrap();
    let pgplane_core::store::Finished::Again(next) = finished else {
        panic!("the registration changed: another pass is due at once, got {finished:?}");
    };
    assert!(!resynced(app.store.cluster_by_id(id).await.unwrap().unwrap()), "the new target needs its own");
    // The next pass starts from the cluster as the end of this one read it: the new
    // registration, its full pass due.
    assert!(next.resync_due, "the next pass over the new target is a full one");
    assert_ne!(
        next.cluster.admin_password_sealed, seen_by_pass.admin_password_sealed,
        "the new registration"
    );
    assert_eq!(next.cluster.generation, app.store.cluster_by_id(id).await.unwrap().unwrap().generation);
    let due = app.store.due_clusters(Duration::from_secs(3600), 1000).await.unwrap();
    assert!(due.iter().any(|d| d.cluster_id == id && d.changed));
}

/// How the test's pgplane logs in to its target as admin (what a registration gives).
fn admin_connection(app: &TestApp) -> pgplane_core::store::AdminConnection {
    pgplane_core::store::AdminConnection {
        host: app.target.host.clone(),
        port: app.target.port,
        user: app.admin_user.clone(),
        password: app.admin_password.clone(),
        database: "postgres".into(),
        sslmode: "disable".into(),
        ca_certificate: None,
    }
}

/// A writer holding the rows of the users `names` of cluster `id`, its transaction open.
async fn writer_holding(app: &TestApp, id: uuid::Uuid, names: &[&str]) -> tokio_postgres::Client {
    let writer = app.metadata_session().await;
    writer.batch_execute("begin").await.unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let locked = writer
        .execute(
            "select 1 from cluster_users where cluster_id = $1::text::uuid and name = any($2) for update",
            &[&id.to_string(), &names],
        )
        .await
        .unwrap();
    assert_eq!(locked, names.len() as u64);
    writer
}

/// Waits (up to 5 s) until `count` sessions of the test's metadata database wait on a lock.
/// `client` may be in a transaction: its view of the sessions is taken anew at every look.
async fn lock_waits(client: &tokio_postgres::Client, count: i64) -> bool {
    let waiting = "select count(*) from pg_stat_activity
                    where datname = current_database() and wait_event_type = 'Lock'";
    for _ in 0..200 {
        client.batch_execute("select pg_stat_clear_snapshot()").await.unwrap();
        let n: i64 = client.query_one(waiting, &[]).await.unwrap().get(0);
        if n >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// A pass's end held up by a writer. The cluster has two users: "recorded", whose outcome the
/// end records, and "expired", whose expiry it enforces. The writer (returned, its transaction
/// open) holds the rows named `held`; the end (spawned) is waiting on one of them.
struct HeldPassEnd {
    writer: tokio_postgres::Client,
    end: tokio::task::JoinHandle<pgplane_core::Result<pgplane_core::store::Finished>>,
    recorded: pgplane_core::model::User,
}

async fn pass_end_held_by(app: &TestApp, id: uuid::Uuid, held: &[&str]) -> HeldPassEnd {
    let expired = pgplane_core::model::UserSettings {
        valid_until: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        ..Default::default()
    };
    let recorded = app.store.insert_user(id, "recorded", b"", &Default::default()).await.unwrap();
    app.store.insert_user(id, "expired", b"", &expired).await.unwrap();
    let cluster = app.store.cluster_by_id(id).await.unwrap().unwrap();

    let writer = writer_holding(app, id, held).await;

    let store = app.store.clone();
    let generation = recorded.generation;
    let end = tokio::spawn(async move {
        let outcome = pgplane_core::store::ObjectOutcome {
            kind: pgplane_core::lifecycle::ObjectKind::User,
            name: "recorded",
            generation,
            outcome: pgplane_core::lifecycle::Outcome::Applied,
        };
        let now = chrono::Utc::now();
        let read = pgplane_core::store::PassRead { at: now, unseen_from: now };
        store
            .finish_pass(&cluster, &[outcome], Some(read), false, None, None, now, Duration::from_secs(3600))
            .await
    });
    assert!(lock_waits(&writer, 1).await, "the pass's end did not wait for the users' rows the writer holds");
    HeldPassEnd { writer, end, recorded }
}

/// Both users' rows as the pass's end left them: the outcome recorded, the expiry enforced.
async fn assert_pass_end_written(app: &TestApp, id: uuid::Uuid, recorded: &pgplane_core::model::User) {
    let users = app.store.list_users(id).await.unwrap();
    let user = |name: &str| users.iter().find(|u| u.name == name).unwrap().clone();
    assert_eq!(user("recorded").applied_generation, recorded.generation, "its outcome was recorded");
    assert!(user("expired").expiry_enforced_at.is_some(), "its expiry was enforced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_end_waits_for_a_writer_holding_its_users_and_then_its_cluster_without_a_deadlock() {
    // No reconciler: the test plays the pass's end against the store, while a writer holds two
    // users' rows and then writes the cluster's row, the order every write takes (the
    // commit-time bump, an access-level change). The end must wait for both rows before it
    // locks the cluster's.
    let (app, id) = registered_without_reconciler().await;
    let HeldPassEnd { writer, end, recorded } = pass_end_held_by(&app, id, &["recorded", "expired"]).await;
    writer
        .execute(
            "update clusters set updated_at = now() where cluster_id = $1::text::uuid",
            &[&id.to_string()],
        )
        .await
        .expect("the writer gets the cluster's row: the end does not hold it while it waits");
    writer.batch_execute("commit").await.unwrap();
    let finished = end.await.unwrap().expect("the end went through once the writer committed");
    assert!(!matches!(finished, pgplane_core::store::Finished::Gone));
    assert_pass_end_written(&app, id, &recorded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_end_that_waited_for_a_write_sends_the_next_pass_to_read_what_it_wrote() {
    // The end's statement reads the rows as they were when it began; a database asked for by
    // a writer that commits while the end waits is not among them, but its bump is in the
    // generation the end returns for the next pass, which records that generation: it must
    // read the databases (and access levels) rather than trust the end's older view.
    let (app, id) = registered_without_reconciler().await;
    let setup = app.metadata_session().await;
    setup
        .execute(
            "update cluster_databases set applied_generation = generation where cluster_id = $1::text::uuid",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    let HeldPassEnd { writer, end, .. } = pass_end_held_by(&app, id, &["recorded"]).await;
    writer
        .execute(
            "insert into cluster_databases (cluster_id, name) values ($1::text::uuid, 'late')",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    writer.batch_execute("commit").await.unwrap();
    match end.await.unwrap().expect("the end went through") {
        pgplane_core::store::Finished::Again(next) => {
            assert!(next.databases_changed, "the next pass must read the databases");
            assert!(next.access_waits, "the next pass must read the access levels");
        }
        other => panic!("a write committed during the pass asks for another: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_end_and_a_move_of_its_cluster_take_the_rows_in_one_order_without_a_deadlock() {
    // The writer holds "recorded": the end, which takes the users' rows in name order, holds
    // "expired" and waits there. A move to another server (`PUT …/pgplane`) rewrites every
    // user's row and the cluster's: it must take the users' rows first, in the same order, and
    // so wait behind the end instead of holding the cluster's row the end needs next.
    let (app, id) = registered_without_reconciler().await;
    let HeldPassEnd { writer, end, recorded } = pass_end_held_by(&app, id, &["recorded"]).await;
    let cluster = app.store.cluster_by_id(id).await.unwrap().unwrap();
    let (store, sealer, admin) = (app.store.clone(), app.sealer.clone(), admin_connection(&app));
    let moved = tokio::spawn(async move {
        let update = pgplane_core::store::TargetUpdate {
            admin: &admin,
            server_version_num: cluster.server_version_num,
            server_version: &cluster.server_version,
            server_id: cluster.server_id.as_deref().unwrap(),
        };
        store.update_target(&cluster, &update, true, &sealer).await
    });
    assert!(lock_waits(&writer, 2).await, "the move waits on a row");
    writer.batch_execute("commit").await.unwrap();
    end.await.unwrap().expect("the end went through");
    moved.await.unwrap().expect("the move went through");
    assert_pass_end_written(&app, id, &recorded).await;
    let users = app.store.list_users(id).await.unwrap();
    assert!(users.iter().all(|u| u.claimed == (u.name == app.primary_user)), "the move unclaimed them after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_end_and_its_clusters_unregistration_take_the_rows_in_one_order_without_a_deadlock() {
    // As with a move: unregistering deletes the cluster's row, then its users' (the foreign
    // keys cascade); it must take the users' rows first.
    let (app, id) = registered_without_reconciler().await;
    let HeldPassEnd { writer, end, recorded: _ } = pass_end_held_by(&app, id, &["recorded"]).await;
    let team = app.store.cluster_by_id(id).await.unwrap().unwrap().team_id;
    let store = app.store.clone();
    let deleted = tokio::spawn(async move { store.delete_cluster(team, id).await });
    assert!(lock_waits(&writer, 2).await, "the unregistration waits on a row");
    writer.batch_execute("commit").await.unwrap();
    let finished = end.await.unwrap().expect("the end went through");
    assert!(!matches!(finished, pgplane_core::store::Finished::Gone), "it ended before the unregistration");
    deleted.await.unwrap().expect("the unregistration went through");
    assert!(app.store.cluster_by_id(id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_end_and_a_deletion_naming_an_heir_take_the_users_rows_in_one_order_without_a_deadlock() {
    // The end holds "expired" and waits on "recorded" (the writer's). Deleting "expired" with
    // "recorded" as its heir takes both rows in name order too: it waits on "expired" behind
    // the end, holding nothing the end needs.
    let (app, id) = registered_without_reconciler().await;
    let HeldPassEnd { writer, end, recorded } = pass_end_held_by(&app, id, &["recorded"]).await;
    let store = app.store.clone();
    let deletion = tokio::spawn(async move {
        store.request_user_deletion(id, "expired", pgplane_core::store::Heir::Named(Some("recorded"))).await
    });
    assert!(lock_waits(&writer, 2).await, "the deletion waits on a row");
    writer.batch_execute("commit").await.unwrap();
    end.await.unwrap().expect("the end went through");
    deletion.await.unwrap().expect("the deletion went through");
    assert_pass_end_written(&app, id, &recorded).await;
}

/// A lease of 60 s that ended `minutes_ago`, what it owns going to `heir` (None: the primary
/// user).
fn ended_lease(minutes_ago: i64, heir: Option<&str>) -> pgplane_core::model::UserSettings {
    pgplane_core::model::UserSettings {
        valid_until: Some(chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)),
        lease: Some(pgplane_core::model::Lease { seconds: 60, heir: heir.map(str::to_string) }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_end_and_the_end_of_leases_take_the_users_rows_in_one_order_without_a_deadlock() {
    // Two leases whose end has come; "b-lease" ended first and was recorded first, so a scan
    // (of the table, or of the leases by end) meets it first. The writer holds "a-lease": the
    // pass's end, which enforces both expiries, waits there. The ending of leases (every
    // controller tick) takes the same rows, in the same order (by name): it waits behind the
    // end instead of holding "b-lease", which the end needs next.
    let (app, id) = registered_without_reconciler().await;
    for (name, ago) in [("b-lease", 2), ("a-lease", 1)] {
        app.store.insert_user(id, name, b"", &ended_lease(ago, None)).await.unwrap();
    }
    let cluster = app.store.cluster_by_id(id).await.unwrap().unwrap();
    let writer = writer_holding(&app, id, &["a-lease"]).await;
    let store = app.store.clone();
    let end = tokio::spawn(async move {
        let now = chrono::Utc::now();
        let read = pgplane_core::store::PassRead { at: now, unseen_from: now };
        store.finish_pass(&cluster, &[], Some(read), false, None, None, now, Duration::from_secs(3600)).await
    });
    assert!(lock_waits(&writer, 1).await, "the pass's end waits on the lease the writer holds");
    let store = app.store.clone();
    let leases = tokio::spawn(async move { store.end_leases().await });
    assert!(lock_waits(&writer, 2).await, "the ending of leases waits on a row");
    writer.batch_execute("commit").await.unwrap();
    end.await.unwrap().expect("the end went through");
    assert_eq!(leases.await.unwrap().expect("the leases ended"), 2);
    let users = app.store.list_users(id).await.unwrap();
    for lease in users.iter().filter(|u| u.name.ends_with("-lease")) {
        assert!(lease.expiry_enforced_at.is_some(), "{}: its expiry was enforced", lease.name);
        assert_eq!(lease.state, pgplane_core::lifecycle::DesiredState::Absent, "{}: it ended", lease.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_creation_naming_a_database_and_its_clusters_unregistration_do_not_deadlock() {
    // The unregistration holds the cluster's databases, then waits to delete the cluster's row
    // (a writer holds its key, as a new row's foreign key does). A user created meanwhile with
    // a parameter set in the default database must not hold the cluster's key while it waits
    // for that database: it takes the database's key first, so it waits, holding nothing the
    // unregistration needs, and fails once the cluster is gone.
    let (app, id) = registered_without_reconciler().await;
    let cluster = app.store.cluster_by_id(id).await.unwrap().unwrap();
    let writer = app.metadata_session().await;
    writer.batch_execute("begin").await.unwrap();
    writer
        .execute("select 1 from clusters where cluster_id = $1::text::uuid for key share", &[&id.to_string()])
        .await
        .unwrap();
    let store = app.store.clone();
    let unregistration = tokio::spawn(async move { store.delete_cluster(cluster.team_id, id).await });
    assert!(lock_waits(&writer, 1).await, "the unregistration waits on the cluster's row");
    let settings = pgplane_core::model::UserSettings {
        parameters: vec![parameter("work_mem", "8MB", Some(&cluster.default_database))],
        ..Default::default()
    };
    let store = app.store.clone();
    let creation = tokio::spawn(async move { store.insert_user(id, "newcomer", b"", &settings).await });
    assert!(lock_waits(&writer, 2).await, "the creation waits on the default database's row");
    writer.batch_execute("commit").await.unwrap();
    unregistration.await.unwrap().expect("the unregistration went through");
    match creation.await.unwrap() {
        Ok(user) => panic!("a user was created in an unregistered cluster: {user:?}"),
        Err(pgplane_core::Error::Db(e)) => {
            let code = e.as_database_error().and_then(|d| d.code()).unwrap_or_default().to_string();
            assert_ne!(code, "40P01", "the creation and the unregistration deadlocked: {e}");
        }
        Err(_) => {}
    }
    assert!(app.store.cluster_by_id(id).await.unwrap().is_none());
}

/// The ending of leases held up by a writer: a lease `lease` whose end has come, its heir
/// `heir` (a plain user) named at its creation; the writer (returned, its transaction open)
/// holds the lease's row, and the ending (spawned) waits on it.
struct HeldLeaseEnd {
    app: TestApp,
    id: uuid::Uuid,
    writer: tokio_postgres::Client,
    leases: tokio::task::JoinHandle<pgplane_core::Result<u64>>,
}

async fn lease_end_held(lease: &str, heir: &str) -> HeldLeaseEnd {
    let (app, id) = registered_without_reconciler().await;
    app.store.insert_user(id, heir, b"", &Default::default()).await.unwrap();
    app.store.insert_user(id, lease, b"", &ended_lease(1, Some(heir))).await.unwrap();
    let writer = writer_holding(&app, id, &[lease]).await;
    let store = app.store.clone();
    let leases = tokio::spawn(async move { store.end_leases().await });
    assert!(lock_waits(&writer, 1).await, "the ending of leases waits on the lease");
    HeldLeaseEnd { app, id, writer, leases }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_of_an_heir_waits_for_the_end_of_the_lease_naming_it_and_is_refused() {
    // The ending of leases holds the lease's heir ("h-owner", before "z-lease" by name) and
    // waits on the lease, which the writer holds. A deletion of the heir asked meanwhile must
    // wait for that end, then see the lease that names its user as heir, and be refused: a
    // user and its heir deleted at the same moment would leave the first without an heir.
    let HeldLeaseEnd { app, id, writer, leases } = lease_end_held("z-lease", "h-owner").await;
    let store = app.store.clone();
    let deletion = tokio::spawn(async move {
        store.request_user_deletion(id, "h-owner", pgplane_core::store::Heir::Named(None)).await
    });
    assert!(lock_waits(&writer, 2).await, "the deletion of the heir waits for the ending of the lease");
    writer.batch_execute("commit").await.unwrap();
    assert_eq!(leases.await.unwrap().expect("the lease ended"), 1);
    match deletion.await.unwrap() {
        Err(pgplane_core::Error::Conflict(message)) => assert!(message.contains("z-lease"), "{message}"),
        other => panic!("the heir of a pending deletion was not refused: {other:?}"),
    }
    let lease = app.store.get_user(id, "z-lease").await.unwrap();
    assert_eq!(lease.state, pgplane_core::lifecycle::DesiredState::Absent);
    assert_eq!(lease.reassign_to.as_deref(), Some("h-owner"), "the lease keeps its heir");
    let heir = app.store.get_user(id, "h-owner").await.unwrap();
    assert_eq!(heir.state, pgplane_core::lifecycle::DesiredState::Present, "the heir stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ending_after_its_heirs_deletion_goes_to_the_primary_user() {
    // The writer holds the lease ("a-lease", before "h-owner"), so the ending of leases waits
    // there before it holds the heir; meanwhile the heir's deletion goes through. The lease
    // then ends judging its heir as it is once held: being deleted, it cannot inherit, and the
    // lease's deletion names none (the primary user inherits).
    let HeldLeaseEnd { app, id, writer, leases } = lease_end_held("a-lease", "h-owner").await;
    app.store
        .request_user_deletion(id, "h-owner", pgplane_core::store::Heir::Named(None))
        .await
        .expect("the heir's deletion goes through before the lease ends");
    writer.batch_execute("commit").await.unwrap();
    assert_eq!(leases.await.unwrap().expect("the lease ended"), 1);
    let lease = app.store.get_user(id, "a-lease").await.unwrap();
    assert_eq!(lease.state, pgplane_core::lifecycle::DesiredState::Absent);
    assert_eq!(lease.reassign_to, None, "an heir being deleted does not inherit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_heir_is_a_lease_ending_with_it_goes_to_the_primary_user() {
    // Both leases end in the same statement: the heir, deleted at the same moment, cannot
    // inherit, as a deletion request naming it would be refused.
    let (app, id) = registered_without_reconciler().await;
    for (name, heir) in [("h-lease", None), ("a-lease", Some("h-lease"))] {
        app.store.insert_user(id, name, b"", &ended_lease(1, heir)).await.unwrap();
    }
    assert_eq!(app.store.end_leases().await.unwrap(), 2);
    let lease = app.store.get_user(id, "a-lease").await.unwrap();
    assert_eq!(lease.state, pgplane_core::lifecycle::DesiredState::Absent);
    assert_eq!(lease.reassign_to, None, "a lease ending at the same moment does not inherit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_while_its_deletion_waits_is_not_deleted_under_a_pool_made_meanwhile() {
    // A deletion naming an heir waits on the heir's row; meanwhile the user is created (so the
    // deletion's lock did not see its row) and a pool that logs in as it is being made (its
    // row held, as a pool's creation holds it). The deletion must judge only rows it holds:
    // once the pool is committed, it is refused, and the user stays.
    let (app, id) = registered_without_reconciler().await;
    app.store.insert_user(id, "heir", b"", &Default::default()).await.unwrap();
    let writer = writer_holding(&app, id, &["heir"]).await;
    let store = app.store.clone();
    let deletion = tokio::spawn(async move {
        store.request_user_deletion(id, "victim", pgplane_core::store::Heir::Named(Some("heir"))).await
    });
    assert!(lock_waits(&writer, 1).await, "the deletion waits on the heir's row");

    app.store.insert_user(id, "victim", b"", &Default::default()).await.unwrap();
    let pool_maker = app.metadata_session().await;
    pool_maker.batch_execute("begin").await.unwrap();
    pool_maker
        .batch_execute(&format!(
            "select 1 from cluster_users where cluster_id = '{id}' and name = 'victim' for share;
             insert into cluster_pools (cluster_id, name, mode, size, database_name, user_name)
             select '{id}', 'victims-pool', 'transaction', 1, name, 'victim'
               from cluster_databases where cluster_id = '{id}' and is_default"
        ))
        .await
        .unwrap();
    writer.batch_execute("commit").await.unwrap();
    // The deletion now waits on the victim's row, which the pool's creation holds.
    assert!(lock_waits(&pool_maker, 1).await, "the deletion waits on the user's row");
    pool_maker.batch_execute("commit").await.unwrap();

    let refused = deletion.await.unwrap().expect_err("the pool logs in as the user");
    assert!(refused.to_string().contains("victims-pool"), "{refused}");
    let users = app.store.list_users(id).await.unwrap();
    let victim = users.iter().find(|u| u.name == "victim").unwrap();
    assert_eq!(victim.state, pgplane_core::lifecycle::DesiredState::Present, "nothing was marked");
}

/// Cluster `id`'s generation: one more for every transaction that wrote its desired state.
async fn generation(app: &TestApp, id: uuid::Uuid) -> i64 {
    app.store.cluster_by_id(id).await.unwrap().unwrap().generation
}

/// Requests asked while a writer (its transaction open) holds the row that `first`, asked
/// before them, waits on: they wait in the process behind `first`, not on a lock, then go in
/// the next batch once the writer commits. Their answers, in order; `first`'s is checked.
async fn asked_behind_a_held_one<T: std::fmt::Debug>(
    writer: tokio_postgres::Client,
    first: impl FnOnce() -> tokio::task::JoinHandle<pgplane_core::Result<T>>,
    others: impl FnOnce() -> Vec<tokio::task::JoinHandle<pgplane_core::Result<T>>>,
) -> Vec<pgplane_core::Result<T>> {
    let first = first();
    assert!(lock_waits(&writer, 1).await, "the first request waits on the held row");
    let others = others();
    // Give them the time to be asked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.batch_execute("commit").await.unwrap();
    first.await.unwrap().expect("the first request went through once the writer committed");
    let mut answers = Vec::new();
    for task in others {
        answers.push(task.await.unwrap());
    }
    answers
}

/// A writer holding cluster `id`'s row, its transaction open: a create waits on it (its
/// foreign key locks the row's key).
async fn writer_holding_the_cluster(app: &TestApp, id: uuid::Uuid) -> tokio_postgres::Client {
    let writer = app.metadata_session().await;
    writer.batch_execute("begin").await.unwrap();
    writer
        .execute("select 1 from clusters where cluster_id = $1::text::uuid for update", &[&id.to_string()])
        .await
        .unwrap();
    writer
}

/// Creates of `asked` (with the settings given; credentials their names' bytes) asked while a
/// writer holds the cluster's row and a create of "a-held" waits on it (see
/// [`asked_behind_a_held_one`]). Their answers.
async fn creates_behind_a_held_one(
    app: &TestApp,
    id: uuid::Uuid,
    asked: Vec<(&'static str, pgplane_core::model::UserSettings)>,
) -> Vec<pgplane_core::Result<pgplane_core::model::User>> {
    let create = |name: &'static str, settings: pgplane_core::model::UserSettings| {
        let store = app.store.clone();
        tokio::spawn(async move { store.insert_user(id, name, name.as_bytes(), &settings).await })
    };
    let writer = writer_holding_the_cluster(app, id).await;
    asked_behind_a_held_one(
        writer,
        || create("a-held", Default::default()),
        || asked.into_iter().map(|(name, settings)| create(name, settings)).collect(),
    )
    .await
}

/// A user parameter, `database` None for every database.
fn parameter(name: &str, value: &str, database: Option<&str>) -> pgplane_core::parameters::RoleParameter {
    pgplane_core::parameters::RoleParameter {
        name: name.into(),
        value: value.into(),
        database: database.map(str::to_owned),
    }
}

/// Deletions of `names` (heirs as given) asked while a writer holds "a-held" and a deletion of
/// it waits on that row (see [`asked_behind_a_held_one`]). Their answers.
async fn deletions_behind_a_held_one(
    app: &TestApp,
    id: uuid::Uuid,
    names: &[(&'static str, Option<&'static str>)],
) -> Vec<pgplane_core::Result<(i64, chrono::DateTime<chrono::Utc>)>> {
    let deletion = |name: &'static str, heir: Option<&'static str>| {
        let store = app.store.clone();
        tokio::spawn(async move {
            store.request_user_deletion(id, name, pgplane_core::store::Heir::Named(heir)).await
        })
    };
    let writer = writer_holding(app, id, &["a-held"]).await;
    asked_behind_a_held_one(
        writer,
        || deletion("a-held", None),
        || names.iter().map(|&(name, heir)| deletion(name, heir)).collect(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_asked_while_one_is_written_are_written_together_in_one_transaction() {
    let (app, id) = registered_without_reconciler().await;
    for name in ["a-held", "b", "c", "d"] {
        app.store.insert_user(id, name, b"", &Default::default()).await.unwrap();
    }
    let before = generation(&app, id).await;
    let answers = deletions_behind_a_held_one(&app, id, &[("b", None), ("c", None), ("d", None)]).await;
    let written: Vec<i64> = answers.into_iter().map(|a| a.expect("marked").0).collect();
    assert_eq!(written.len(), 3);
    // One transaction for the held user's, one for the three that waited behind it.
    assert_eq!(generation(&app, id).await - before, 2, "the three deletions went in one commit");
    for name in ["a-held", "b", "c", "d"] {
        let user = app.store.get_user(id, name).await.unwrap();
        assert_eq!(user.state, pgplane_core::lifecycle::DesiredState::Absent, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_asked_while_one_is_written_are_written_together_in_one_transaction() {
    // A writer holds the cluster's row, so that the first create waits (its foreign key locks
    // the row's key). Three creates asked meanwhile wait in the process behind it, then go in
    // one statement: two new users in one commit ("c" with parameters, one of them for the
    // default database), and "taken", a user the cluster has, left out of the batch and
    // refused alone, as it would be on its own.
    let (app, id) = registered_without_reconciler().await;
    app.store.insert_user(id, "taken", b"", &Default::default()).await.unwrap();
    let databases = app.store.list_databases(id).await.unwrap();
    let default_db = databases.iter().find(|d| d.is_default).unwrap().name.clone();
    let c_parameters =
        vec![parameter("work_mem", "8MB", None), parameter("statement_timeout", "5s", Some(&default_db))];
    let c_settings =
        pgplane_core::model::UserSettings { parameters: c_parameters.clone(), ..Default::default() };
    let before = generation(&app, id).await;
    let answers = creates_behind_a_held_one(
        &app,
        id,
        vec![("b", Default::default()), ("c", c_settings), ("taken", Default::default())],
    )
    .await;
    let [b, c, taken] = <[_; 3]>::try_from(answers).unwrap();
    for (name, answer, parameters) in [("b", b, Vec::new()), ("c", c, c_parameters)] {
        let user = answer.expect("created");
        assert_eq!((user.name.as_str(), user.credentials_sealed.as_slice()), (name, name.as_bytes()));
        let stored = app.store.get_user(id, name).await.unwrap();
        assert_eq!(stored.generation, user.generation);
        let sorted = |mut p: Vec<pgplane_core::parameters::RoleParameter>| {
            p.sort_by(|a, b| (&a.database, &a.name).cmp(&(&b.database, &b.name)));
            p
        };
        let parameters = sorted(parameters);
        assert_eq!(sorted(user.parameters.0.clone()), parameters, "{name}: the answer's parameters");
        assert_eq!(sorted(stored.parameters.0), parameters, "{name}: the stored parameters");
    }
    match taken {
        Err(pgplane_core::Error::Invalid(message)) => {
            assert!(message.contains("already exists"), "{message}")
        }
        other => panic!("a duplicate in a batch must be refused as alone: {other:?}"),
    }
    assert_eq!(
        app.store.get_user(id, "taken").await.unwrap().credentials_sealed,
        b"",
        "the user is untouched"
    );
    // One transaction for the first create, one for the two written together.
    assert_eq!(generation(&app, id).await - before, 2, "the two creates went in one commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn creates_woken_together_are_written_together_in_one_transaction() {
    // Requests woken by one event (as the waiters of a finished pass are) reach their batch one
    // after another, the first scheduling the batch's task before the others have run (one
    // worker, woken from it: the order is the scheduler's, not chance). The first must not go
    // alone: the four users are written in one commit.
    let (app, id) = registered_without_reconciler().await;
    let before = generation(&app, id).await;
    let (go, ready) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let (store, mut ready) = (app.store.clone(), ready.clone());
            tokio::spawn(async move {
                ready.wait_for(|go| *go).await.unwrap();
                store.insert_user(id, &format!("woken-{i}"), b"", &Default::default()).await
            })
        })
        .collect();
    // Give them the time to wait, then wake them from the worker (as the waiter of finished
    // passes does), not from the test's own thread, which the worker would race.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::spawn(async move { go.send_replace(true) }).await.unwrap();
    for task in tasks {
        task.await.unwrap().expect("created");
    }
    assert_eq!(generation(&app, id).await - before, 1, "the four creates went in one commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_parameter_names_no_database_is_left_out_of_its_batch_and_refused() {
    // A parameter naming a database the cluster does not have (the route checks it, but a drop
    // can come between) leaves its user out of the batch's statement; the others are written
    // by it, in one commit, and the culprit, asked again alone, is told why, nothing of it
    // stored.
    let (app, id) = registered_without_reconciler().await;
    let missing = pgplane_core::model::UserSettings {
        parameters: vec![parameter("work_mem", "8MB", Some("no_such_db"))],
        ..Default::default()
    };
    let before = generation(&app, id).await;
    let answers = creates_behind_a_held_one(
        &app,
        id,
        vec![("b", Default::default()), ("c", missing), ("d", Default::default())],
    )
    .await;
    let [b, c, d] = <[_; 3]>::try_from(answers).unwrap();
    for (name, answer) in [("b", b), ("d", d)] {
        let user = answer.expect("created");
        assert_eq!(app.store.get_user(id, name).await.unwrap().generation, user.generation, "{name}");
    }
    assert_eq!(generation(&app, id).await - before, 2, "b and d went in one commit");
    assert_unknown_database(c, "no_such_db");
    assert!(matches!(app.store.get_user(id, "c").await, Err(pgplane_core::Error::NotFound("user"))));
    assert_eq!(
        rows_naming(&app, id, "user_name", "c").await,
        0,
        "no parameter of the refused user is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_with_parameters_for_every_database_are_created_alone_and_in_a_batch() {
    // A parameter for every database names no database: it never counts as one naming a
    // database the cluster does not have, whatever else the statement holds (here no database
    // present among those named: alone, and beside a user whose parameter names a missing one).
    let (app, id) = registered_without_reconciler().await;
    let everywhere = || pgplane_core::model::UserSettings {
        parameters: vec![parameter("statement_timeout", "300ms", None)],
        ..Default::default()
    };
    let alone = app.store.insert_user(id, "alone", b"", &everywhere()).await.expect("created alone");
    assert_eq!(alone.parameters.0, everywhere().parameters);
    let missing = pgplane_core::model::UserSettings {
        parameters: vec![parameter("work_mem", "8MB", Some("no_such_db"))],
        ..Default::default()
    };
    let answers =
        creates_behind_a_held_one(&app, id, vec![("b", everywhere()), ("c", everywhere()), ("d", missing)])
            .await;
    let [b, c, d] = <[_; 3]>::try_from(answers).unwrap();
    for (name, answer) in [("b", b), ("c", c)] {
        assert_eq!(answer.expect("created in a batch").parameters.0, everywhere().parameters, "{name}");
        assert_eq!(rows_naming(&app, id, "user_name", name).await, 1, "{name}: its parameter is stored");
    }
    assert_unknown_database(d, "no_such_db");
}

/// Asserts that `answer` refuses a parameter or level naming `database` as not a database of
/// the cluster (422).
fn assert_unknown_database<T: std::fmt::Debug>(answer: pgplane_core::Result<T>, database: &str) {
    match answer {
        Err(pgplane_core::Error::Invalid(message)) => {
            assert!(message.contains(&format!("unknown database {database:?}")), "{message}")
        }
        other => panic!("expected the database {database:?} refused as unknown: {other:?}"),
    }
}

/// How many parameters and access levels of cluster `id` have `value` in `column` (user_name or
/// database_name).
async fn rows_naming(app: &TestApp, id: uuid::Uuid, column: &str, value: &str) -> i64 {
    let session = app.metadata_session().await;
    let count = format!(
        "select (select count(*) from cluster_user_parameters where cluster_id = $1::text::uuid and {column} = $2)
              + (select count(*) from cluster_user_access where cluster_id = $1::text::uuid and {column} = $2)"
    );
    session.query_one(&count, &[&id.to_string(), &value]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_naming_a_database_asked_while_its_deletion_is_written_are_refused() {
    // The deletion of "doomed" holds its row, then waits on one of its parameters (a writer
    // holds it) before it can remove them. Asked meanwhile, each already checked against the
    // databases as the route read them: a user's creation and a settings change, each with a
    // parameter set in "doomed", an access level on it (for the same user as the settings
    // change, so it may wait behind that one), and a user's creation with a level on it. They
    // must wait for the deletion, then find the database being deleted: each is refused, the
    // users they would have created are not there, and nothing names the database afterwards.
    let (app, id) = registered_without_reconciler().await;
    app.store.insert_database(id, "doomed").await.unwrap();
    let in_doomed = || vec![parameter("work_mem", "8MB", Some("doomed"))];
    let member = pgplane_core::model::UserSettings { parameters: in_doomed(), ..Default::default() };
    app.store.insert_user(id, "member", b"", &member).await.unwrap();
    let other = app.store.insert_user(id, "other", b"", &Default::default()).await.unwrap();
    let writer = app.metadata_session().await;
    writer.batch_execute("begin").await.unwrap();
    writer
        .execute(
            "select 1 from cluster_user_parameters where cluster_id = $1::text::uuid and user_name = 'member' for update",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    let store = app.store.clone();
    let deletion = tokio::spawn(async move {
        store.request_deletion(pgplane_core::lifecycle::ObjectKind::Database, id, "doomed").await
    });
    assert!(lock_waits(&writer, 1).await, "the deletion waits on the parameter the writer holds");

    let store = app.store.clone();
    let creation = tokio::spawn(async move {
        let settings = pgplane_core::model::UserSettings { parameters: in_doomed(), ..Default::default() };
        store.insert_user(id, "newcomer", b"", &settings).await
    });
    let store = app.store.clone();
    let change = tokio::spawn(async move {
        let change = pgplane_core::model::SettingsChange {
            allow_replication: false,
            connection_limit: None,
            parameters: Some(in_doomed()),
            valid_until: None,
        };
        store.update_user_settings(id, "other", &change).await
    });
    let store = app.store.clone();
    let access = tokio::spawn(async move {
        store
            .replace_access(id, "other", &[("doomed".into(), pgplane_core::access::AccessLevel::ReadOnly)])
            .await
    });
    let store = app.store.clone();
    let joining = tokio::spawn(async move {
        let levels = [("doomed".into(), pgplane_core::access::AccessLevel::ReadOnly)];
        store.insert_user_with_access(id, "joiner", b"", &Default::default(), &levels).await
    });
    assert!(lock_waits(&writer, 5).await, "the four wait for the deletion holding the database's row");
    writer.batch_execute("commit").await.unwrap();

    deletion.await.unwrap().expect("the deletion went through");
    assert_unknown_database(creation.await.unwrap(), "doomed");
    assert_unknown_database(change.await.unwrap(), "doomed");
    assert_unknown_database(access.await.unwrap(), "doomed");
    assert_unknown_database(joining.await.unwrap(), "doomed");
    for name in ["newcomer", "joiner"] {
        assert!(
            matches!(app.store.get_user(id, name).await, Err(pgplane_core::Error::NotFound("user"))),
            "{name}"
        );
    }
    assert_eq!(app.store.get_user(id, "other").await.unwrap().generation, other.generation, "unchanged");
    assert_eq!(rows_naming(&app, id, "database_name", "doomed").await, 0, "nothing names the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_a_level_on_a_database_deleted_since_the_route_read_it_is_refused_for_that() {
    // The route checked the levels against the databases as it read them; the deletion of
    // "doomed" came after. The store refuses the level before it writes the user: the answer
    // names the database, the user's name taken or not, and nothing is written.
    let (app, id) = registered_without_reconciler().await;
    app.store.insert_database(id, "doomed").await.unwrap();
    app.store.insert_user(id, "taken", b"", &Default::default()).await.unwrap();
    app.store.request_deletion(pgplane_core::lifecycle::ObjectKind::Database, id, "doomed").await.unwrap();
    let levels = [("doomed".into(), pgplane_core::access::AccessLevel::ReadOnly)];
    for name in ["taken", "fresh"] {
        let answer = app.store.insert_user_with_access(id, name, b"", &Default::default(), &levels).await;
        assert_unknown_database(answer, "doomed");
    }
    assert!(matches!(app.store.get_user(id, "fresh").await, Err(pgplane_core::Error::NotFound("user"))));
    assert_eq!(rows_naming(&app, id, "database_name", "doomed").await, 0, "nothing names the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databases_deletion_waits_for_a_create_writing_a_parameter_in_it_and_removes_that() {
    // A user's creation with a parameter set in "doomed" holds that database's key from the
    // start of its statement, and here waits at its end on the cluster's row (a writer holds
    // it). The deletion of "doomed" asked meanwhile must wait for the creation to commit, then
    // remove its parameter with the others: none is left naming a database being deleted.
    let (app, id) = registered_without_reconciler().await;
    app.store.insert_database(id, "doomed").await.unwrap();
    let writer = writer_holding_the_cluster(&app, id).await;
    let store = app.store.clone();
    let creation = tokio::spawn(async move {
        let settings = pgplane_core::model::UserSettings {
            parameters: vec![parameter("work_mem", "8MB", Some("doomed"))],
            ..Default::default()
        };
        store.insert_user(id, "newcomer", b"", &settings).await
    });
    assert!(lock_waits(&writer, 1).await, "the creation waits on the cluster's row");
    let store = app.store.clone();
    let deletion = tokio::spawn(async move {
        store.request_deletion(pgplane_core::lifecycle::ObjectKind::Database, id, "doomed").await
    });
    assert!(lock_waits(&writer, 2).await, "the deletion waits too");
    writer.batch_execute("commit").await.unwrap();

    let user = creation.await.unwrap().expect("created, committed before the deletion");
    assert_eq!(user.parameters.0.len(), 1);
    deletion.await.unwrap().expect("the deletion went through");
    assert_eq!(
        rows_naming(&app, id, "database_name", "doomed").await,
        0,
        "the parameter went with the database"
    );
    assert_eq!(app.store.get_user(id, "newcomer").await.unwrap().parameters.0, Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_asked_while_one_is_written_are_written_together_in_one_transaction() {
    // A writer holds "a-held"'s row, so that its reset waits. Four resets asked meanwhile wait
    // in the process behind it, then go in one statement: two users get their new credentials
    // in one commit; "leaving", a user being deleted, and "nobody", a name the cluster does not
    // have, are left out of the batch and refused alone, as they would be on their own.
    let (app, id) = registered_without_reconciler().await;
    for name in ["a-held", "b", "c", "leaving"] {
        app.store.insert_user(id, name, b"old", &Default::default()).await.unwrap();
    }
    app.store.request_user_deletion(id, "leaving", pgplane_core::store::Heir::Named(None)).await.unwrap();
    let b_before = app.store.get_user(id, "b").await.unwrap();
    let before = generation(&app, id).await;
    let writer = writer_holding(&app, id, &["a-held"]).await;
    let reset = |name: &'static str| {
        let store = app.store.clone();
        tokio::spawn(async move { store.replace_user_credentials(id, name, name.as_bytes()).await })
    };
    let answers = asked_behind_a_held_one(
        writer,
        || reset("a-held"),
        || ["b", "c", "leaving", "nobody"].into_iter().map(reset).collect(),
    )
    .await;
    let [b, c, leaving, nobody] = <[_; 4]>::try_from(answers).unwrap();
    for (name, answer) in [("b", b), ("c", c)] {
        let user = answer.expect("reset");
        assert_eq!((user.name.as_str(), user.credentials_sealed.as_slice()), (name, name.as_bytes()));
        let stored = app.store.get_user(id, name).await.unwrap();
        assert_eq!(
            (stored.generation, stored.credentials_sealed),
            (user.generation, name.as_bytes().to_vec())
        );
    }
    assert!(
        app.store.get_user(id, "b").await.unwrap().generation > b_before.generation,
        "a reset is a new generation of the user"
    );
    match leaving {
        Err(pgplane_core::Error::Conflict(message)) => {
            assert!(message.contains("being deleted"), "{message}")
        }
        other => panic!("a user being deleted must be refused as alone: {other:?}"),
    }
    assert!(matches!(nobody, Err(pgplane_core::Error::NotFound("user"))), "{nobody:?}");
    assert_eq!(app.store.get_user(id, "leaving").await.unwrap().credentials_sealed, b"old", "untouched");
    // One transaction for the held user's reset, one for the two written together.
    assert_eq!(generation(&app, id).await - before, 2, "the two resets went in one commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_its_heir_deleted_in_one_batch_are_judged_one_after_the_other() {
    // "u" handed to "h", and "h" itself, asked together: written in one statement, both would
    // be marked, and "u" left without an heir. One of them must be refused, as when they come
    // one after the other; "e", asked with them, goes through.
    let (app, id) = registered_without_reconciler().await;
    for name in ["a-held", "e", "h", "u"] {
        app.store.insert_user(id, name, b"", &Default::default()).await.unwrap();
    }
    let answers = deletions_behind_a_held_one(&app, id, &[("u", Some("h")), ("h", None), ("e", None)]).await;
    let [u, h, e] = <[_; 3]>::try_from(answers).unwrap();
    e.expect("a deletion with no tie to the others goes through");
    match (u, h) {
        (Ok(_), Err(pgplane_core::Error::Conflict(message))) => {
            assert!(message.contains("inherits what \"u\" owns"), "{message}");
            assert_eq!(app.store.get_user(id, "u").await.unwrap().reassign_to.as_deref(), Some("h"));
            assert_eq!(
                app.store.get_user(id, "h").await.unwrap().state,
                pgplane_core::lifecycle::DesiredState::Present
            );
        }
        (Err(pgplane_core::Error::Invalid(message)), Ok(_)) => {
            assert!(message.contains("reassign_to"), "{message}");
            assert_eq!(
                app.store.get_user(id, "u").await.unwrap().state,
                pgplane_core::lifecycle::DesiredState::Present
            );
        }
        other => panic!("a user and its heir were not judged one after the other: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_sessions_plan_each_statement_once() {
    // Planned for their parameters at each of their first runs on every session of the pool,
    // pgplane's writes paid for planning as much as for running: a session plans a statement
    // once, for any parameters, and keeps that plan.
    let (app, id) = registered_without_reconciler().await;
    let mut session = app.store.pool().acquire().await.unwrap();
    let text = "select name from cluster_users where cluster_id = $1 and name = $2";
    for name in ["doadmin", "nobody", "doadmin"] {
        sqlx::query(text).bind(id).bind(name).fetch_optional(&mut *session).await.unwrap();
    }
    let (generic, custom): (i64, i64) =
        sqlx::query_as("select generic_plans, custom_plans from pg_prepared_statements where statement = $1")
            .bind(text)
            .fetch_one(&mut *session)
            .await
            .unwrap();
    assert_eq!((generic, custom), (3, 0), "one plan for any parameters, made once and kept");
}

async fn what_a_dead_process_left_running_is_ended_before_a_pass(major: u32) {
    // A process that dies mid-pass takes the cluster's lock with it, but a statement it sent
    // may still be running on the target: here a CREATE ROLE of the name about to be asked
    // for, its transaction open, as pgplane's admin role under the name of a process this
    // deployment has run and that has no session left on the metadata database. The next pass
    // ends that session before it reads the catalogs: the user is created, answered ready, and
    // logs in. A busy session of a process this deployment never ran (another deployment
    // sharing the server) is left alone.
    let app = TestApp::spawn(major).await;
    let prefix = pgplane_core::instance::PREFIX;
    let dead = format!("{prefix}dead{}", app.suffix);
    let stranger = format!("{prefix}other{}", app.suffix);
    app.metadata_session().await.execute("insert into processes (name) values ($1)", &[&dead]).await.unwrap();
    let name = app.unique("orphaned");
    let app = &app;
    let admin_session = |process: String| async move {
        let session = app.target.login(&app.admin_user, &app.admin_password, "postgres").await.unwrap();
        session.batch_execute(&format!("SET application_name = '{process}'")).await.unwrap();
        session
    };
    let left = admin_session(dead).await;
    left.batch_execute(&format!("BEGIN; CREATE ROLE \"{name}\" LOGIN")).await.unwrap();
    let other = admin_session(stranger).await;
    other.batch_execute("BEGIN; SELECT 1").await.unwrap();

    created_and_logging_in(app, &name).await;
    assert!(left.simple_query("SELECT 1").await.is_err(), "the dead process's session was ended");
    assert!(other.simple_query("SELECT 1").await.is_ok(), "another deployment's session was left alone");
}
on_each_version!(what_a_dead_process_left_running_is_ended_before_a_pass);

/// Creates `name` through the API: answered ready, and it logs in with the password given.
async fn created_and_logging_in(app: &TestApp, name: &str) {
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "{body}");
    let password = body["user"]["password"].as_str().unwrap();
    assert!(app.target.login(name, password, &app.default_db).await.is_ok());
}

/// A process that a pass found alive at work on the server (its session there left alone) and
/// that dies holding a statement open there: the next pass ends what it left before reading
/// the catalogs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_seen_alive_then_dead_has_what_it_left_ended() {
    let app = TestApp::spawn(17).await;
    let process = format!("{}gone{}", pgplane_core::instance::PREFIX, app.suffix);
    let metadata = app.metadata_session().await;
    metadata.execute("insert into processes (name) values ($1)", &[&process]).await.unwrap();
    // Alive: a session of its own on the metadata database, and one on the target, idle.
    let alive = app.metadata_session().await;
    alive.batch_execute(&format!("SET application_name = '{process}'")).await.unwrap();
    let left = app.target.login(&app.admin_user, &app.admin_password, "postgres").await.unwrap();
    left.batch_execute(&format!("SET application_name = '{process}'")).await.unwrap();
    app.create_user(&app.unique("before")).await;
    assert!(left.simple_query("SELECT 1").await.is_ok(), "a live process's session is left alone");

    // It dies with a CREATE ROLE of the next user's name open on the target.
    let name = app.unique("after");
    left.batch_execute(&format!("BEGIN; CREATE ROLE \"{name}\" LOGIN")).await.unwrap();
    drop(alive);
    let gone = "select count(*) from pg_stat_activity where application_name = $1";
    for _ in 0..100 {
        if metadata.query_one(gone, &[&process]).await.unwrap().get::<_, i64>(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    created_and_logging_in(&app, &name).await;
    assert!(left.simple_query("SELECT 1").await.is_err(), "the dead process's session was ended");
}
