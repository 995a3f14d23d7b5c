//! Rotation without downtime (`POST …/reset_auth` with `grace`): the new password belongs to
//! the user's second login, which acts as the user; the old one keeps working until the grace
//! ends, then its logins stop and its sessions end. Both logins follow the user's access
//! levels, settings and deletion; the plain DigitalOcean reset stays immediate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

use crate::{drift_described, on_each_version, sqlstate};

/// The owner of a table in the default database.
async fn owner_of(app: &TestApp, table: &str) -> String {
    app.target_admin(&app.default_db)
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = $1", &[&table])
        .await
        .unwrap()
        .get(0)
}

async fn a_rotation_with_a_grace_keeps_the_old_password_until_it_ends(major: u32) {
    let app = TestApp::spawn(major).await;
    let db = app.default_db.clone();
    let name = app.unique("rotated");
    let settings = json!({"parameters": [{"name": "statement_timeout", "value": "300ms"}]});
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({"name": name, "settings": settings, "access": [{"database": db, "level": "read_write"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let old = body["user"]["password"].as_str().unwrap().to_string();
    let primary = app.target.login(&app.primary_user, &app.primary_password().await, &db).await.unwrap();
    let goods = app.unique("goods");
    primary
        .batch_execute(&format!(
            "CREATE TABLE {goods} (n int); INSERT INTO {goods} VALUES (1); GRANT CREATE ON SCHEMA public TO {name}"
        ))
        .await
        .unwrap();
    let old_session = app.target.login(&name, &old, &db).await.unwrap();
    let before = app.unique("made_before");
    old_session.batch_execute(&format!("CREATE TABLE {before} (n int)")).await.unwrap();

    // The rotation: a new password on the second login, the old one kept for the grace.
    let path = app.cluster_path(&format!("/users/{name}/reset_auth"));
    let (status, body) = app.post(&path, json!({"grace": "8s"})).await;
    assert_eq!(status, 200, "{body}");
    let user = &body["user"];
    let alternate = format!("{name}_alt");
    assert_eq!(user["login"], alternate.as_str(), "{body}");
    assert_eq!(user["grace"]["login"], name.as_str(), "{body}");
    assert_eq!(user["status"], "ready", "{body}");
    let until: DateTime<Utc> = user["grace"]["until"].as_str().unwrap().parse().unwrap();
    let new = user["password"].as_str().unwrap().to_string();
    assert_ne!(new, old);

    // A client connecting anew for every transaction with the old password meanwhile.
    let (stop, attempts, failures_in_grace) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (target, name, old, db) = (app.target.clone(), name.clone(), old.clone(), db.clone());
        let (stop, attempts, failures) = (stop.clone(), attempts.clone(), failures_in_grace.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && Utc::now() < until - chrono::Duration::milliseconds(300) {
                attempts.fetch_add(1, Ordering::Relaxed);
                let ok = match target.login(&name, &old, &db).await {
                    Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // The new password logs in as the second login, which acts as the user: its tables are
    // the user's, its access and settings are the user's.
    let new_session = app.target.login(&alternate, &new, &db).await.expect("the new password logs in");
    let row = new_session.query_one("SELECT current_user::text, session_user::text", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), (name.clone(), alternate.clone()));
    let after = app.unique("made_after");
    new_session.batch_execute(&format!("CREATE TABLE {after} (n int)")).await.unwrap();
    assert_eq!(owner_of(&app, &after).await, name);
    assert_eq!(owner_of(&app, &before).await, name);
    new_session.batch_execute(&format!("INSERT INTO {goods} VALUES (2)")).await.expect("read_write follows");
    let err = new_session.simple_query("SELECT pg_sleep(2)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "the parameters follow: {err}");

    // Zero failures during the grace; after it, every login with the old password fails and
    // the old session is ended.
    client.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(attempts.load(Ordering::Relaxed) > 10, "the client ran");
    assert_eq!(failures_in_grace.load(Ordering::Relaxed), 0, "logins failed during the grace");
    let ended = app
        .eventually(Duration::from_secs(20), || async {
            old_session.simple_query("SELECT 1").await.is_err()
                && app.target.login(&name, &old, &db).await.is_err()
        })
        .await;
    assert!(ended, "the old login outlived its grace");
    for _ in 0..5 {
        assert!(app.target.login(&name, &old, &db).await.is_err());
    }
    new_session.simple_query("SELECT 1").await.expect("the new login's session stays");
    let (_, body) = app.get(&app.cluster_path(&format!("/users/{name}"))).await;
    assert!(body["user"].get("grace").is_none(), "{body}");

    // A plain reset is immediate: the current login gets a new password, the previous stops.
    let (status, body) = app.post(&path, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["login"], alternate.as_str());
    let newest = body["user"]["password"].as_str().unwrap().to_string();
    app.target.login(&alternate, &newest, &db).await.expect("the newest password logs in");
    assert!(app.target.login(&alternate, &new, &db).await.is_err());

    // Another rotation alternates back to the user's own role.
    let (status, body) = app.post(&path, json!({"grace": "1h"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["user"].get("login").is_none(), "{body}");
    let own = body["user"]["password"].as_str().unwrap().to_string();
    app.target.login(&name, &own, &db).await.expect("the user's own role logs in again");
    app.target.login(&alternate, &newest, &db).await.expect("the previous password within its grace");
    let (status, body) = app.post(&path, json!({"grace": "1h"})).await;
    assert_eq!(status, 409, "a rotation during a grace: {body}");

    // Deleting the user drops both logins; its tables go to the primary user.
    drop((old_session, new_session));
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{name}"))).await;
    assert_eq!(status, 204);
    assert!(!app.role_exists(&name).await && !app.role_exists(&alternate).await);
    assert_eq!(owner_of(&app, &after).await, app.primary_user);
}
on_each_version!(a_rotation_with_a_grace_keeps_the_old_password_until_it_ends);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_graces_are_refused_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("steady");
    let password = app.create_user(&name).await;
    let path = app.cluster_path(&format!("/users/{name}/reset_auth"));
    for (grace, expected) in [("soon", "not a duration"), ("8d", "at most 7d"), ("0s", "between 1s")] {
        let (status, body) = app.post(&path, json!({"grace": grace})).await;
        assert_eq!(status, 422, "{grace}: {body}");
        assert!(body["message"].as_str().unwrap().contains(expected), "{grace}: {body}");
    }
    app.target.login(&name, &password, &app.default_db).await.expect("the password is unchanged");
    assert!(!app.role_exists(&format!("{name}_alt")).await);
    // A second login's name that is another user's: refused.
    app.create_user(&format!("{name}_alt")).await;
    let (status, body) = app.post(&path, json!({"grace": "10m"})).await;
    assert_eq!(status, 422, "{body}");
    app.target.login(&name, &password, &app.default_db).await.expect("the password is unchanged");
}

async fn the_primary_user_rotates_with_a_grace_and_keeps_owning_everything(major: u32) {
    let app = TestApp::spawn_with(AppOptions {
        target_major: major,
        resync_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let (db, primary) = (app.default_db.clone(), app.primary_user.clone());
    let old = app.primary_password().await;
    let path = app.cluster_path(&format!("/users/{primary}/reset_auth"));
    let (status, body) = app.post(&path, json!({"grace": "6s"})).await;
    assert_eq!(status, 200, "{body}");
    let alternate = format!("{primary}_alt");
    assert_eq!(body["user"]["login"], alternate.as_str(), "{body}");
    assert_eq!(body["user"]["status"], "ready", "{body}");
    let new = body["user"]["password"].as_str().unwrap().to_string();
    // The cluster's connection names the login the password is for.
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    assert_eq!(cluster["database"]["connection"]["user"], alternate.as_str(), "{cluster}");

    // The second login acts as the primary user: it owns what it makes, databases included.
    let session = app.target.login(&alternate, &new, &db).await.expect("the second login logs in");
    let table = app.unique("owned");
    session.batch_execute(&format!("CREATE TABLE {table} (n int)")).await.unwrap();
    assert_eq!(owner_of(&app, &table).await, primary);
    let made = app.unique("madedb");
    session.batch_execute(&format!("CREATE DATABASE {made}")).await.expect("CREATEDB as the primary user");
    let owner = "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1";
    assert_eq!(app.target_strings(owner, &[&made]).await, [primary.as_str()]);
    session.batch_execute(&format!("DROP DATABASE {made}")).await.unwrap();
    app.target.login(&primary, &old, &db).await.expect("the old password within its grace");

    // After the grace, the old login stops; full passes keep the second login's membership
    // (it is pgplane's, not a foreign one) and record no drift for it.
    let stopped = app
        .eventually(Duration::from_secs(30), || async {
            app.target.login(&primary, &old, &db).await.is_err()
        })
        .await;
    assert!(stopped, "the primary user's old login outlived its grace");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let member = "SELECT count(*)::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                   JOIN pg_roles a ON a.oid = m.member WHERE r.rolname = $1 AND a.rolname = $2";
    assert_eq!(app.target_strings(member, &[&primary, &alternate]).await, ["1"]);
    let described = drift_described(&app, &primary).await;
    assert!(described.iter().all(|d| !d.contains("foreign")), "{described:?}");
    let other = app.unique("after");
    app.create_user(&other).await;
    app.target.login(&alternate, &new, &db).await.expect("the second login still logs in");
}
on_each_version!(the_primary_user_rotates_with_a_grace_and_keeps_owning_everything);
