//! Attacks through expiries and leases: another team renewing, expiring or listing my users, a
//! lease of theirs naming my user (or my primary user) as the heir of what it makes, and the
//! end of sessions at an expiry reaching sessions that are not the expired user's.

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
