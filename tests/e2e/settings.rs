//! Per-user settings beyond DigitalOcean's (`settings.connection_limit`, `settings.parameters`):
//! checked before anything is stored, applied with ALTER ROLE … CONNECTION LIMIT and
//! ALTER ROLE … [IN DATABASE …] SET, felt by the user's sessions, and repaired when changed by
//! hand.

use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

use crate::{drift_described_once, on_each_version, sqlstate};

/// The role's parameter settings on the target, as `database:name=value` (`*` for every
/// database), sorted.
pub(crate) async fn settings_on_target(app: &TestApp, role: &str) -> Vec<String> {
    let mut found = app
        .target_strings(
            "SELECT coalesce(d.datname, '*') || ':' || c
               FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
               LEFT JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c
              WHERE r.rolname = $1",
            &[&role],
        )
        .await;
    found.sort();
    found
}

async fn limits_and_parameters_are_felt_by_sessions_and_come_back_when_changed(major: u32) {
    let app = TestApp::spawn_with(AppOptions {
        target_major: major,
        resync_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let name = app.unique("limited");
    let db = app.default_db.clone();
    let settings = json!({
        "connection_limit": 1,
        "parameters": [
            {"name": "statement_timeout", "value": "200ms"},
            {"name": "work_mem", "value": "8MB", "database": db},
            {"name": "search_path", "value": "\"$user\", public"},
        ],
    });
    let (status, body) =
        app.post(&app.cluster_path("/users"), json!({"name": name, "settings": settings})).await;
    assert_eq!(status, 201, "{body}");
    let user = &body["user"];
    assert_eq!(user["status"], "ready", "{body}");
    assert_eq!(user["settings"]["connection_limit"], 1);
    // Every database's parameters first, then each database's, by name.
    assert_eq!(
        user["settings"]["parameters"][2],
        json!({"name": "work_mem", "value": "8MB", "database": db})
    );
    let password = user["password"].as_str().unwrap().to_string();

    // On the server: the limit, and the parameters where they were asked for.
    let limit = "SELECT rolconnlimit::text FROM pg_roles WHERE rolname = $1";
    assert_eq!(app.target_strings(limit, &[&name]).await, ["1"]);
    assert_eq!(
        settings_on_target(&app, &name).await,
        ["*:search_path=\"$user\", public", "*:statement_timeout=200ms", &format!("{db}:work_mem=8MB")]
    );

    // Felt by the user's sessions: a statement past the timeout is cancelled (57014), and the
    // connection after the limit is refused (53300).
    let session = app.target.login(&name, &password, &db).await.expect("the user logs in");
    let err = session.simple_query("SELECT pg_sleep(2)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let work_mem = session.query_one("SHOW work_mem", &[]).await.unwrap();
    assert_eq!(work_mem.get::<_, String>(0), "8MB");
    let err = app.target.login(&name, &password, &db).await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err}");
    drop(session);

    // Changed by hand: repaired, and the drift recorded.
    let admin = app.target_admin("postgres").await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {name} CONNECTION LIMIT 7; ALTER ROLE {name} SET statement_timeout = '5s'; \
             ALTER ROLE {name} SET lock_timeout = '1s'"
        ))
        .await
        .unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async {
            app.target_strings(limit, &[&name]).await == ["1"]
                && settings_on_target(&app, &name).await.len() == 3
                && settings_on_target(&app, &name).await.contains(&"*:statement_timeout=200ms".to_string())
        })
        .await;
    assert!(repaired, "{:?}", settings_on_target(&app, &name).await);
    let repair = |d: &str| {
        d.contains("its connection limit was changed to 7")
            && d.contains("parameter statement_timeout was changed to \"5s\"")
            && d.contains("parameter lock_timeout was set to \"1s\"")
    };
    let described = drift_described_once(&app, &name, repair).await;
    assert!(described.iter().any(|d| repair(d)), "{described:?}");

    // An update changes what it names: the parameters go, the limit stays.
    let path = app.cluster_path(&format!("/users/{name}"));
    let (status, body) = app.put(&path, json!({"settings": {"parameters": []}})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["settings"]["connection_limit"], 1);
    assert!(settings_on_target(&app, &name).await.is_empty());
    assert_eq!(app.target_strings(limit, &[&name]).await, ["1"]);
    let (status, _) = app.put(&path, json!({"settings": {"connection_limit": -1}})).await;
    assert_eq!(status, 201);
    assert_eq!(app.target_strings(limit, &[&name]).await, ["-1"]);

    // The primary user gets the same (REPLICATION aside).
    let primary = app.cluster_path(&format!("/users/{}", app.primary_user));
    let (status, body) = app
        .put(&primary, json!({"settings": {"parameters": [{"name": "idle_session_timeout", "value": "1h"}]}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(settings_on_target(&app, &app.primary_user).await, ["*:idle_session_timeout=1h"]);
}
on_each_version!(limits_and_parameters_are_felt_by_sessions_and_come_back_when_changed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_saying_which_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    let name = app.unique("strict");
    app.create_user(&name).await;
    let path = app.cluster_path(&format!("/users/{name}"));
    let p = |name: &str, value: &str| json!({"settings": {"parameters": [{"name": name, "value": value}]}});
    let cases = [
        (p("session_authorization", "postgres"), "parameter \"session_authorization\" cannot be set"),
        (p("log_statement", "none"), "parameter \"log_statement\" cannot be set"),
        (p("statement_timeout", "soon"), "invalid value \"soon\" for parameter statement_timeout"),
        (p("statement_timeout", "1s'; ALTER ROLE x SUPERUSER; --"), "invalid value"),
        (p("search_path", "a; DROP SCHEMA public"), "invalid value"),
        (p("work_mem", "1kB"), "the least is 64kB"),
        (json!({"settings": {"connection_limit": -5}}), "invalid connection_limit -5"),
        (
            json!({"settings": {"parameters": [{"name": "work_mem", "value": "4MB", "database": "nowhere"}]}}),
            "unknown database \"nowhere\"",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = app.put(&path, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["id"], "unprocessable_entity");
        assert!(answer["message"].as_str().unwrap().contains(expected), "{body}: {answer}");
        let (status, _) = app
            .post(
                &app.cluster_path("/users"),
                json!({"name": app.unique("never"), "settings": body["settings"]}),
            )
            .await;
        assert_eq!(status, 422, "creating with {body}");
    }
    // Nothing changed: not in the metadata, not on the server.
    let (_, body) = app.get(&path).await;
    assert_eq!(body["user"]["settings"]["parameters"], json!([]));
    assert_eq!(body["user"]["settings"]["connection_limit"], -1);
    assert!(settings_on_target(&app, &name).await.is_empty());
    let (_, body) = app.get(&app.cluster_path("/users")).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 2, "no user was created: {body}");
}
