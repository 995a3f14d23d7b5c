//! Attacks on the per-server session budget, on the sessions that the clusters of one admin
//! connection share, and on the limits that must hold across replicas.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use pgplane_testkit::{AppOptions, TestApp};

use crate::on_each_version;
use reqwest::Method;
use serde_json::{json, Value};

use super::Rival;

/// The most sessions pgplane's admin role held on the test's server at once, sampled every
/// few milliseconds until dropped.
struct Sampler {
    peak: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start(app: &TestApp) -> Self {
        let session = app.target_admin("postgres").await;
        let admin = app.admin_user.clone();
        let peak = Arc::new(AtomicI64::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            let sql = "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                       WHERE usename = $1 AND application_name LIKE 'pgplane/%'";
            loop {
                let n: i64 = session.query_one(sql, &[&admin]).await.expect("sample").get(0);
                seen.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { peak, task }
    }

    fn peak(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The session cap of the attacks below: small, so that an overshoot shows.
const CAP: i64 = 3;

/// A test app whose servers allow pgplane [`CAP`] sessions each, and another team's cluster
/// on the same server.
async fn capped_with_rival(major: u32, team: &str) -> (TestApp, Rival) {
    let app = TestApp::spawn_with(AppOptions {
        target_major: major,
        max_sessions_per_server: CAP as usize,
        ..Default::default()
    })
    .await;
    let rival = Rival::register(&app, team).await;
    (app, rival)
}

async fn a_flood_of_previews_stays_within_the_cap_and_does_not_stop_another_teams_writes(major: u32) {
    let (app, rival) = capped_with_rival(major, "flood").await;
    let mut dry_run = app.registration(&app.unique("flood-dry").replace('_', "-"));
    dry_run["pgplane"]["primary_user"] = json!(app.unique("dry_admin"));
    dry_run["pgplane"]["default_database"] = json!(app.unique("dry_db"));
    let previews: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, rival.path("/plan"), None),
        (Method::GET, rival.path(&format!("/users/{}/dependencies", rival.primary_user)), None),
        (Method::GET, rival.path("/unmanaged"), None),
        (Method::POST, "/v2/databases?dry_run=true".into(), Some(dry_run)),
    ];
    let sampler = Sampler::start(&app).await;

    // The rival floods previews, eight at a time, while the first team writes.
    let flooding = Arc::new(AtomicBool::new(true));
    let floods = (0..8).map(|i| {
        let (app, rival, previews, flooding) = (&app, &rival, &previews, flooding.clone());
        async move {
            let (mut answered, mut busy) = (0, 0);
            let mut n = i;
            while flooding.load(Ordering::Relaxed) {
                let (method, path, body) = &previews[n % previews.len()];
                n += 1;
                let (status, answer) = rival.call(app, method.clone(), path, body.clone()).await;
                match status {
                    200 => answered += 1,
                    503 => {
                        let message = answer["message"].as_str().unwrap_or_default();
                        assert!(message.contains("busy"), "{path}: {answer}");
                        busy += 1;
                    }
                    _ => panic!("{path}: {status} {answer}"),
                }
            }
            (answered, busy)
        }
    });
    let writes = async {
        for n in 0..4 {
            let name = app.unique(&format!("w{n}"));
            let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
            assert_eq!(status, 201, "{body}");
            app.create_db(&app.unique(&format!("wdb{n}"))).await;
        }
        flooding.store(false, Ordering::Relaxed);
    };
    let (outcomes, ()) = tokio::join!(futures::future::join_all(floods), writes);
    let (answered, busy) = outcomes.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    assert!(answered > 0, "the flood was answered ({busy} busy)");

    // The first team's writes were applied on the server.
    for n in 0..4 {
        let (user, db) = (app.unique(&format!("w{n}")), app.unique(&format!("wdb{n}")));
        let applied = app
            .eventually(Duration::from_secs(30), || async {
                app.role_exists(&user).await && app.database_exists(&db).await
            })
            .await;
        assert!(applied, "{user} and {db} are on the server");
    }
    let peak = sampler.peak();
    assert!(peak > 0, "the sampler saw pgplane's sessions");
    assert!(
        peak <= CAP,
        "{peak} sessions of pgplane on the server, cap {CAP} ({answered} previews answered, {busy} busy)"
    );
}
on_each_version!(a_flood_of_previews_stays_within_the_cap_and_does_not_stop_another_teams_writes);

/// A pass spreads many role steps over several sessions (up to four). Another team's burst of
/// user creates, sixteen in flight on a server whose session cap is three, gets its users
/// but never more sessions than the cap, and does not stop the first team's writes.
async fn a_burst_of_another_teams_creates_stays_within_the_cap(major: u32) {
    let (app, rival) = capped_with_rival(major, "burst").await;
    let sampler = Sampler::start(&app).await;
    let names: Vec<String> = (0..48).map(|n| app.unique(&format!("burst{n}"))).collect();
    let burst =
        futures::stream::iter(names.iter().map(|name| {
            let (app, rival) = (&app, &rival);
            async move {
                rival.call(app, Method::POST, &rival.path("/users"), Some(json!({ "name": name }))).await
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let writes = async {
        for n in 0..4 {
            let name = app.unique(&format!("calm{n}"));
            let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
            assert_eq!(status, 201, "{body}");
        }
    };
    let (answers, ()) = tokio::join!(burst, writes);
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
    }
    for name in &names {
        assert!(app.role_exists(name).await, "{name} is on the server");
    }
    let peak = sampler.peak();
    assert!(peak > 0, "the sampler saw pgplane's sessions");
    assert!(peak <= CAP, "{peak} sessions of pgplane on the server, cap {CAP}");
}
on_each_version!(a_burst_of_another_teams_creates_stays_within_the_cap);

/// Clusters registered with one admin connection share its pooled sessions (the reconciler's
/// pools are keyed by the whole connection). A rival who knows the first team's admin login
/// but not its secret gets neither a cluster nor those warm sessions: not by registering, not
/// by re-pointing its own cluster, and its own cluster is left as it was.
async fn a_guessed_admin_secret_gets_no_shared_session(major: u32) {
    let app = TestApp::spawn(major).await;
    // The first team's sessions are warm: a write has just been applied through them.
    let warm = app.unique("warm");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({ "name": warm })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "{body}");
    let rival = Rival::register(&app, "guess").await;

    let guessed = "guessed-admin-secret";
    let stranger = app.unique("stranger_admin");
    let mut body = app.registration(&app.unique("stranger").replace('_', "-"));
    body["pgplane"]["password"] = json!(guessed);
    body["pgplane"]["primary_user"] = json!(stranger);
    body["pgplane"]["default_database"] = json!(app.unique("stranger_db"));
    let (status, answer) = rival.call(&app, Method::POST, "/v2/databases", Some(body)).await;
    assert_eq!(status, 422, "a registration with a guessed secret is refused: {answer}");
    assert!(!app.role_exists(&stranger).await, "nothing was made with the guessed connection");

    let mut repoint = app.registration("ignored")["pgplane"].clone();
    repoint["host"] = json!("localhost");
    repoint["password"] = json!(guessed);
    repoint["primary_user"] = json!(rival.primary_user);
    repoint["default_database"] = json!(rival.default_db);
    let (status, answer) = rival.call(&app, Method::PUT, &rival.path("/pgplane"), Some(repoint)).await;
    assert_eq!(status, 422, "re-pointing to a guessed secret is refused: {answer}");

    // The rival's cluster still works with the connection it registered.
    let own = app.unique("guess_own");
    let (status, answer) =
        rival.call(&app, Method::POST, &rival.path("/users"), Some(json!({ "name": own }))).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["user"]["status"], "ready", "{answer}");
    assert!(app.role_exists(&own).await);
}

on_each_version!(a_guessed_admin_secret_gets_no_shared_session);

async fn a_rival_named_after_a_dead_pgplane_process_keeps_its_session(major: u32) {
    // Before it reads the catalogs, a pass ends the sessions that a dead process of its own
    // deployment left running on the target (`reliability::what_a_dead_process_left_running_is_ended_before_a_pass`).
    // The rival names its own session after such a process (process names show in
    // `pg_stat_activity` to every role) and holds a transaction open in it while team A
    // writes: a pass ends only sessions of its own admin role, so the rival's lives on, and
    // team A's user is created all the same.
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "poser").await;
    let dead = format!("{}dead{}", pgplane_core::instance::PREFIX, app.suffix);
    let meta = app.metadata_session().await;
    meta.execute("insert into processes (name) values ($1)", &[&dead]).await.unwrap();
    let session = rival.session(&app, &rival.default_db).await;
    session.batch_execute(&format!("SET application_name = '{dead}'; BEGIN; SELECT 1")).await.unwrap();
    let name = app.unique("unbothered");
    let password = app.create_user(&name).await;
    assert!(app.target.login(&name, &password, &app.default_db).await.is_ok());
    assert!(session.simple_query("SELECT 1").await.is_ok(), "the rival's session was left alone");
}
on_each_version!(a_rival_named_after_a_dead_pgplane_process_keeps_its_session);
