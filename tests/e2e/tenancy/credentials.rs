//! Attacks through the credential lifecycle: another team renewing, expiring or listing my
//! users, a lease of theirs naming my user (or my primary user) as the heir of what it makes,
//! the end of sessions at an expiry reaching sessions that are not the expired user's, and a
//! rotation's second login: rotating my user, or taking its name on the shared server.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::json;

use super::Rival;
use crate::on_each_version;

async fn expiries_and_leases_stay_within_the_team(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    let lease = app.unique("mylease");
    let (status, _) = app.post(&app.cluster_path("/users"), json!({"name": lease, "ttl": "1h"})).await;
    assert_eq!(status, 201);
    let mine = app.unique("mine");
    let password = app.create_user(&mine).await;
    let soon = (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339_opts(SecondsFormat::Secs, true);

    // The rival renews my lease, expires my user or lists my expiring users: through my
    // cluster (not theirs to name) or theirs (no such user there).
    for path in [app.cluster_path(""), rival.path("")] {
        let (status, _) = rival
            .call(&app, Method::POST, &format!("{path}/users/{lease}/renew"), Some(json!({"ttl": "1s"})))
            .await;
        assert_eq!(status, 404, "{path}");
        let (status, _) = rival
            .call(
                &app,
                Method::PUT,
                &format!("{path}/users/{mine}"),
                Some(json!({"settings": {"valid_until": soon}})),
            )
            .await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, body) =
        rival.call(&app, Method::GET, &rival.path("/users?expiring_within=366d"), None).await;
    assert_eq!(status, 200);
    assert!(!body.to_string().contains(&lease), "{body}");
    let (status, _) =
        rival.call(&app, Method::GET, &app.cluster_path("/users?expiring_within=1d"), None).await;
    assert_eq!(status, 404);
    let valid_until = "SELECT coalesce(rolvaliduntil::text, '') FROM pg_roles WHERE rolname = $1";
    assert_eq!(app.target_strings(valid_until, &[&mine]).await, [""]);

    // A lease of theirs handing what it makes to my user, or my primary user: refused.
    for heir in [mine.as_str(), app.primary_user.as_str()] {
        let name = app.unique("theirs");
        let body = json!({"name": name, "ttl": "1h", "reassign_to": heir});
        let (status, answer) = rival.call(&app, Method::POST, &rival.path("/users"), Some(body)).await;
        assert_eq!(status, 422, "{heir}: {answer}");
        assert!(!app.role_exists(&name).await);
    }

    // My user expires: its sessions end, the rival's (on the same server) do not.
    let rivals_session = rival.session(&app, &rival.default_db).await;
    let my_session = app.target.login(&mine, &password, &app.default_db).await.unwrap();
    let (status, _) = app
        .put(&app.cluster_path(&format!("/users/{mine}")), json!({"settings": {"valid_until": soon}}))
        .await;
    assert_eq!(status, 201);
    let ended = app
        .eventually(Duration::from_secs(30), || async { my_session.simple_query("SELECT 1").await.is_err() })
        .await;
    assert!(ended, "my expired user's session outlived its expiry");
    rivals_session.simple_query("SELECT 1").await.expect("the rival's session is untouched");
}
on_each_version!(expiries_and_leases_stay_within_the_team);

async fn a_rotations_second_login_stays_the_teams(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    let (mine, other) = (app.unique("mine"), app.unique("other"));
    let password = app.create_user(&mine).await;
    app.create_user(&other).await;

    // The rival rotates my user: not theirs to name.
    for path in [
        app.cluster_path(&format!("/users/{mine}/reset_auth")),
        rival.path(&format!("/users/{mine}/reset_auth")),
    ] {
        let (status, _) = rival.call(&app, Method::POST, &path, Some(json!({"grace": "1h"}))).await;
        assert_eq!(status, 404, "{path}");
    }
    app.target.login(&mine, &password, &app.default_db).await.expect("my password is unchanged");

    // The rival holds the name my second login would take: my rotation is refused, nothing of
    // theirs is touched.
    let taken = format!("{other}_alt");
    let (status, body) =
        rival.call(&app, Method::POST, &rival.path("/users"), Some(json!({"name": taken}))).await;
    assert_eq!(status, 201, "{body}");
    let rivals_password = body["user"]["password"].as_str().unwrap().to_string();
    let (status, body) =
        app.post(&app.cluster_path(&format!("/users/{other}/reset_auth")), json!({"grace": "1h"})).await;
    assert!(status == 409 || status == 422, "{status} {body}");
    let member_of = "SELECT count(*)::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1";
    assert_eq!(app.target_strings(member_of, &[&taken]).await, ["0"]);
    app.target
        .login(&taken, &rivals_password, &rival.default_db)
        .await
        .expect("the rival's user is untouched");

    // My rotation's second login: the rival cannot take its name afterwards.
    let (status, body) =
        app.post(&app.cluster_path(&format!("/users/{mine}/reset_auth")), json!({"grace": "1h"})).await;
    assert_eq!(status, 200, "{body}");
    let alternate = format!("{mine}_alt");
    let (status, body) =
        rival.call(&app, Method::POST, &rival.path("/users"), Some(json!({"name": alternate}))).await;
    assert!(status == 409 || status == 422, "{status} {body}");
    // And it acts as my user only.
    let acts = "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                 JOIN pg_roles a ON a.oid = m.member WHERE a.rolname = $1";
    assert_eq!(app.target_strings(acts, &[&alternate]).await, [mine.as_str()]);
}
on_each_version!(a_rotations_second_login_stays_the_teams);
