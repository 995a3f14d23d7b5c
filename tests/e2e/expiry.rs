//! Expiring users and leases (`settings.valid_until`, `ttl`, `POST …/renew`): the expiry is the
//! role's `VALID UNTIL` on the server, which then refuses the user's logins; pgplane ends its
//! open sessions at that moment and shows it `expired`. A lease is deleted at its end, what it
//! made handed to its heir, so that its `DROP ROLE` never fails and nothing is lost.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

use crate::{drift_described_once, on_each_version, sqlstate};

/// The role's `VALID UNTIL` on the server, in UTC to the second ("" when there is none).
async fn valid_until_on_target(app: &TestApp, role: &str) -> String {
    app.target_strings(
        "SELECT coalesce(to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')
           FROM pg_roles WHERE rolname = $1",
        &[&role],
    )
    .await
    .pop()
    .unwrap_or_default()
}

/// A moment `seconds` from now, as the API takes it.
fn in_seconds(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whether `session` has been ended by the server.
async fn ended(session: &tokio_postgres::Client) -> bool {
    session.simple_query("SELECT 1").await.is_err()
}

async fn an_expired_user_is_refused_and_its_sessions_end(major: u32) {
    let app = TestApp::spawn_with(AppOptions {
        target_major: major,
        resync_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let db = app.default_db.clone();
    let (name, lasting) = (app.unique("expiring"), app.unique("lasting"));
    app.create_user(&lasting).await;
    let until = in_seconds(5);
    let (status, body) = app
        .post(&app.cluster_path("/users"), json!({"name": name, "settings": {"valid_until": until}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "{body}");
    assert_eq!(body["user"]["settings"]["valid_until"], until.as_str());
    assert_eq!(valid_until_on_target(&app, &name).await, until);
    let password = body["user"]["password"].as_str().unwrap().to_string();

    // Listed among those expiring within the hour, the lasting user is not.
    let (status, body) = app.get(&app.cluster_path("/users?expiring_within=1h")).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> =
        body["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(listed, [name.as_str()]);

    // Counted (over every cluster of the metadata database) as expiring within the hour.
    let (_, expiring) = app.store.expiry_counts(Duration::from_secs(3600)).await.unwrap();
    assert!(expiring >= 1, "{expiring}");

    // A session open at the expiry is ended; a new login is refused; the user shows expired.
    let session = app.target.login(&name, &password, &db).await.expect("logs in before its expiry");
    let gone = app.eventually(Duration::from_secs(30), || ended(&session)).await;
    assert!(gone, "the session outlived the expiry");
    let err = app.target.login(&name, &password, &db).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    let (_, body) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(body["user"]["status"], "expired", "{body}");
    let (expired, _) = app.store.expiry_counts(Duration::from_secs(3600)).await.unwrap();
    assert!(expired >= 1, "{expired}");

    // An expiry removed: logins work again.
    let path = app.cluster_path(&format!("/users/{name}"));
    let (status, body) = app.put(&path, json!({"settings": {"valid_until": null}})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["status"], "ready", "{body}");
    assert!(body["user"]["settings"].get("valid_until").is_none(), "{body}");
    assert_eq!(valid_until_on_target(&app, &name).await, "");
    app.target.login(&name, &password, &db).await.expect("logs in again");

    // An expiry changed by hand is drift: repaired and recorded.
    let later = in_seconds(3600);
    let (status, _) = app.put(&path, json!({"settings": {"valid_until": later}})).await;
    assert_eq!(status, 201);
    let admin = app.target_admin("postgres").await;
    admin.batch_execute(&format!("ALTER ROLE {name} VALID UNTIL 'infinity'")).await.unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async { valid_until_on_target(&app, &name).await == later })
        .await;
    assert!(repaired, "{}", valid_until_on_target(&app, &name).await);
    let removed = |d: &str| d.contains("its expiry was removed");
    let described = drift_described_once(&app, &name, removed).await;
    assert!(described.iter().any(|d| removed(d)), "{described:?}");
}
on_each_version!(an_expired_user_is_refused_and_its_sessions_end);

async fn a_lease_ends_with_its_sessions_and_hands_what_it_made_to_its_heir(major: u32) {
    let app = TestApp::spawn(major).await;
    let db = app.default_db.clone();
    let heir = app.unique("heir");
    app.create_user(&heir).await;
    let lease = app.unique("job");
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({"name": lease, "ttl": "1h", "reassign_to": heir,
                   "access": [{"database": db, "level": "read_write"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let user = &body["user"];
    assert_eq!(user["lease"], json!({"ttl_seconds": 3600, "reassign_to": heir}), "{body}");
    assert_eq!(user["access"][0]["level"], "read_write", "{body}");
    let password = user["password"].as_str().unwrap().to_string();

    // The job makes a table (the primary user lets it create in the schema, as a tenant would).
    let primary = app.target.login(&app.primary_user, &app.primary_password().await, &db).await.unwrap();
    primary.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {lease}")).await.unwrap();
    let job = app.target.login(&lease, &password, &db).await.expect("the lease logs in");
    let table = app.unique("made_by_job");
    job.batch_execute(&format!("CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (42)"))
        .await
        .unwrap();

    // Renewed to a short lifetime: it ends then, its session with it, the role is dropped and
    // the table (with its row) belongs to the heir.
    let (status, body) =
        app.post(&app.cluster_path(&format!("/users/{lease}/renew")), json!({"ttl": "4s"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["lease"]["ttl_seconds"], 4);
    let gone = app.eventually(Duration::from_secs(30), || async { !app.role_exists(&lease).await }).await;
    assert!(gone, "the lease outlived its end");
    assert!(ended(&job).await, "the lease's session outlived it");
    let owner = "SELECT tableowner::text FROM pg_tables WHERE tablename = $1";
    let target_db = app.target_admin(&db).await;
    let row = target_db.query_one(owner, &[&table]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), heir);
    let kept = target_db.query_one(&format!("SELECT n FROM {table}"), &[]).await.unwrap();
    assert_eq!(kept.get::<_, i32>(0), 42);
    // The pass records the drop after making it: the API forgets the lease a moment later.
    let forgotten = app
        .eventually(Duration::from_secs(10), || async {
            app.get(&app.cluster_path(&format!("/users/{lease}"))).await.0 == 404
        })
        .await;
    assert!(forgotten, "the ended lease is still shown");

    // Revoked before its end: deleted at once, as any user.
    let revoked = app.unique("revoked");
    let (status, _) = app.post(&app.cluster_path("/users"), json!({"name": revoked, "ttl": "1h"})).await;
    assert_eq!(status, 201);
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{revoked}"))).await;
    assert_eq!(status, 204);
    assert!(!app.role_exists(&revoked).await);
}
on_each_version!(a_lease_ends_with_its_sessions_and_hands_what_it_made_to_its_heir);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expiries_and_leases_are_refused_saying_why_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    let plain = app.unique("plain");
    app.create_user(&plain).await;
    let users = app.cluster_path("/users");
    let fresh = app.unique("never");
    let cases = [
        (json!({"name": fresh, "ttl": "soon"}), "ttl \"soon\" is not a duration"),
        (json!({"name": fresh, "ttl": "400d"}), "between 1s and 366d"),
        (json!({"name": fresh, "ttl": "1h", "settings": {"valid_until": in_seconds(60)}}), "not both"),
        (json!({"name": fresh, "settings": {"valid_until": in_seconds(-60)}}), "must be in the future"),
        (json!({"name": fresh, "reassign_to": plain}), "only to a lease"),
        (json!({"name": fresh, "ttl": "1h", "reassign_to": "nobody_here"}), "not a user of this cluster"),
    ];
    for (body, expected) in cases {
        let (status, answer) = app.post(&users, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(expected), "{body}: {answer}");
    }
    let (status, answer) =
        app.post(&users, json!({"name": fresh, "settings": {"valid_until": "tomorrow"}})).await;
    assert!(status == 400 || status == 422, "{answer}");
    assert!(!app.role_exists(&fresh).await);
    let (status, _) = app.get(&app.cluster_path(&format!("/users/{fresh}"))).await;
    assert_eq!(status, 404);

    // The primary user never expires; a plain user is not renewed; a lease's end moves only by
    // renewal; windows are durations.
    let primary = app.cluster_path(&format!("/users/{}", app.primary_user));
    let (status, body) = app.put(&primary, json!({"settings": {"valid_until": in_seconds(60)}})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("cannot expire"), "{body}");
    let (status, body) = app.post(&app.cluster_path(&format!("/users/{plain}/renew")), json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not a lease"), "{body}");
    let lease = app.unique("lease");
    let (status, _) = app.post(&users, json!({"name": lease, "ttl": "1h"})).await;
    assert_eq!(status, 201);
    let (status, body) = app
        .put(
            &app.cluster_path(&format!("/users/{lease}")),
            json!({"settings": {"valid_until": in_seconds(60)}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("renew"), "{body}");
    let (status, body) = app.get(&app.cluster_path("/users?expiring_within=whenever")).await;
    assert_eq!(status, 422, "{body}");
    let (_, body) = app.get(&primary).await;
    assert!(body["user"]["settings"].get("valid_until").is_none(), "{body}");
}
